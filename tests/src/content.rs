//! Content filtering's lab, as test-peers.md draws it: a customer namespace (clients, two
//! customers' addresses), the router (a real `mssp agent` with the customer-facing veth in
//! `customer_interfaces`, forwarding) and an internet namespace running a real dnsmasq
//! (answering every *.test name) and a real nginx (HTTP and HTTPS, one certificate for
//! several names). Every process is stopped by its pid and the namespaces removed on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{
    agent::{AgentDirs, AgentProc, mssp, mssp_json},
    netns::{Netns, sh, unique},
};

pub const DNS: &str = "198.18.53.53";
pub const WEB: &str = "198.18.80.80";
pub const DNS6: &str = "2001:db8:53::53";
pub const WEB6: &str = "2001:db8:80::80";
/// acme's IPv6 client.
pub const ACME6: &str = "2001:db8:7::10";
/// Customer 7 (acme, filtering) and customer 8 (beta, none), both in the customer namespace.
pub const ACME: &str = "198.19.7.10";
pub const BETA: &str = "198.19.8.10";

/// A daemon a test started, stopped by pid on drop.
pub struct Daemon {
    pub name: &'static str,
    pub pid: i32,
    child: Option<Child>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling the process this test started.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        if let Some(mut c) = self.child.take() {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        } else {
            std::thread::sleep(Duration::from_millis(100));
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

pub struct Lab {
    // Drop order: processes first, then the agent, then the namespaces.
    pub nginx: Daemon,
    pub dnsmasq: Daemon,
    pub agent: AgentProc,
    pub dirs: AgentDirs,
    pub cus: Netns,
    pub rtr: Netns,
    pub net: Netns,
    pub work: PathBuf,
    pub if_cus: String,
    pub if_rtr: String,
}

fn wait_file(path: &std::path::Path) -> String {
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Lab {
    /// `policy` is the agent's central policy; `extra` more agent config.
    pub fn new(tag: &str, policy: &str, extra: &str) -> Lab {
        Lab::with_mss(tag, policy, extra, true)
    }

    /// `small_mss`: the server advertises an MSS of 100, so ClientHellos span segments.
    pub fn with_mss(tag: &str, policy: &str, extra: &str, small_mss: bool) -> Lab {
        let u = unique(tag);
        let cus = Netns::new(&format!("{u}-c"));
        let rtr = Netns::new(&format!("{u}-r"));
        let net = Netns::new(&format!("{u}-n"));
        let (rc, cc, ri, ni) = (
            format!("{u}rc"),
            format!("{u}cc"),
            format!("{u}ri"),
            format!("{u}ni"),
        );
        sh(&[
            "ip", "link", "add", &rc, "netns", &rtr.name, "type", "veth", "peer", "name", &cc,
            "netns", &cus.name,
        ]);
        sh(&[
            "ip", "link", "add", &ri, "netns", &rtr.name, "type", "veth", "peer", "name", &ni,
            "netns", &net.name,
        ]);
        for (ns, ifs) in [(&rtr, [&rc, &ri]), (&cus, [&cc, &cc]), (&net, [&ni, &ni])] {
            for i in ifs {
                ns.sh(&["ip", "link", "set", i, "up"]);
            }
        }
        rtr.sh(&["ip", "addr", "add", "198.19.7.1/24", "dev", &rc]);
        rtr.sh(&["ip", "addr", "add", "198.19.8.1/24", "dev", &rc]);
        rtr.sh(&["ip", "addr", "add", "198.19.9.1/24", "dev", &rc]);
        rtr.sh(&["ip", "addr", "add", "198.18.1.1/24", "dev", &ri]);
        cus.sh(&["ip", "addr", "add", &format!("{ACME}/24"), "dev", &cc]);
        cus.sh(&["ip", "addr", "add", &format!("{BETA}/24"), "dev", &cc]);
        cus.sh(&["ip", "addr", "add", "198.19.9.10/24", "dev", &cc]);
        net.sh(&["ip", "addr", "add", "198.18.1.2/24", "dev", &ni]);
        net.sh(&["ip", "addr", "add", &format!("{DNS}/32"), "dev", &ni]);
        net.sh(&["ip", "addr", "add", &format!("{WEB}/32"), "dev", &ni]);
        // IPv6 beside: acme's 2001:db8:7::/64 behind the router, the servers' addresses.
        for (ns, addr, dev) in [
            (&rtr, "2001:db8:7::1/64".to_string(), &rc),
            (&rtr, "2001:db8:1::1/64".to_string(), &ri),
            (&cus, format!("{ACME6}/64"), &cc),
            (&net, "2001:db8:1::2/64".to_string(), &ni),
            (&net, format!("{DNS6}/128"), &ni),
            (&net, format!("{WEB6}/128"), &ni),
        ] {
            ns.sh(&["ip", "-6", "addr", "add", &addr, "dev", dev, "nodad"]);
        }
        for (ns, dst, via) in [
            (&cus, "2001:db8::/32".to_string(), "2001:db8:7::1"),
            (&net, "2001:db8:7::/48".to_string(), "2001:db8:1::1"),
            (&rtr, format!("{DNS6}/128"), "2001:db8:1::2"),
            (&rtr, format!("{WEB6}/128"), "2001:db8:1::2"),
        ] {
            ns.sh(&["ip", "-6", "route", "add", &dst, "via", via]);
        }
        rtr.sh(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        rtr.sh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        rtr.sh(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
        cus.sh(&[
            "ip",
            "route",
            "add",
            "198.18.0.0/15",
            "via",
            "198.19.7.1",
            "src",
            ACME,
        ]);
        // The server side advertises a small MSS, so a TLS ClientHello spans several segments
        // (as a post-quantum key share makes it on a 1500-byte path); the name is then in a
        // later segment than the first.
        if small_mss {
            net.sh(&[
                "ip",
                "route",
                "add",
                "198.19.0.0/16",
                "via",
                "198.18.1.1",
                "advmss",
                "100",
            ]);
        } else {
            net.sh(&["ip", "route", "add", "198.19.0.0/16", "via", "198.18.1.1"]);
        }
        rtr.sh(&[
            "ip",
            "route",
            "add",
            &format!("{DNS}/32"),
            "via",
            "198.18.1.2",
        ]);
        rtr.sh(&[
            "ip",
            "route",
            "add",
            &format!("{WEB}/32"),
            "via",
            "198.18.1.2",
        ]);

        let work = std::env::temp_dir().join(format!("mssp-content-{u}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).expect("work dir");

        let dnsmasq = {
            let pid = work.join("dnsmasq.pid");
            net.sh(&[
                "dnsmasq",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={DNS}"),
                &format!("--listen-address={DNS6}"),
                &format!("--address=/test/{WEB}"),
                &format!("--address=/test/{WEB6}"),
                &format!("--pid-file={}", pid.display()),
                &format!("--log-facility={}", work.join("dnsmasq.log").display()),
                "--user=root",
            ]);
            let pid: i32 = wait_file(&pid).trim().parse().expect("dnsmasq pid");
            Daemon {
                name: "dnsmasq",
                pid,
                child: None,
            }
        };
        let (crt, key) = (work.join("web.crt"), work.join("web.key"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-days",
                "2",
                "-subj",
                "/CN=allowed.test",
            ])
            .arg("-addext")
            .arg("subjectAltName=DNS:allowed.test,DNS:bad.test,DNS:www.bad.test")
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = work.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off; master_process off; pid {w}/nginx.pid; error_log {w}/nginx.err; events {{}}\n\
                 http {{ access_log off; client_body_temp_path {w}; proxy_temp_path {w}; fastcgi_temp_path {w}; uwsgi_temp_path {w}; scgi_temp_path {w};\n\
                 server {{ listen {WEB}:80; listen {WEB}:443 ssl; listen [{WEB6}]:80; listen [{WEB6}]:443 ssl; ssl_certificate {crt}; ssl_certificate_key {key};\n\
                 location / {{ return 200 \"ok\\n\"; }} }} }}\n",
                w = work.display(),
                crt = crt.display(),
                key = key.display()
            ),
        )
        .expect("nginx conf");
        let child = Command::new("ip")
            .args(["netns", "exec", &net.name, "nginx", "-e"])
            .arg(work.join("nginx.err"))
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx");
        let nginx = Daemon {
            name: "nginx",
            pid: child.id() as i32,
            child: Some(child),
        };
        let t = Instant::now();
        while net
            .try_sh(&["bash", "-c", &format!("exec 3<>/dev/tcp/{WEB}/80")])
            .is_err()
        {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "nginx did not start: {}",
                std::fs::read_to_string(work.join("nginx.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        let dirs = AgentDirs::new(
            tag,
            &[&ri],
            Some(policy),
            &format!("customer_interfaces = [{rc:?}]\n{extra}"),
        );
        let agent = AgentProc::start(&rtr, &dirs, &[], &[]);
        let lab = Lab {
            nginx,
            dnsmasq,
            agent,
            dirs,
            cus,
            rtr,
            net,
            work,
            if_cus: cc,
            if_rtr: rc,
        };
        lab.wait_inspector(Duration::from_secs(15));
        lab
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        mssp(&self.dirs.socket, args)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        mssp_json(&self.dirs.socket, args)
    }

    pub fn filtering_status(&self) -> serde_json::Value {
        self.json(&["status", "--json"])["filtering"].clone()
    }

    /// Until the inspector runs, enforces (not fail-open) and has its table.
    #[track_caller]
    pub fn wait_inspector(&self, within: Duration) -> serde_json::Value {
        let t = Instant::now();
        loop {
            let s = self.filtering_status();
            if s["inspector_running"] == true
                && s["fail_open"] == false
                && !s["sockets"].as_array().is_none_or(|a| a.is_empty())
            {
                return s;
            }
            assert!(
                t.elapsed() < within,
                "inspector not enforcing within {within:?}: {s}\n{}",
                self.agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `dig` from `src` for `name` (A), over TCP with `tcp`: (status, answers, query ms).
    pub fn dig(&self, src: &str, name: &str, tcp: bool) -> (String, Vec<String>, u64) {
        self.dig_at(src, DNS, name, "A", tcp)
    }

    /// `dig` from `src` to `server` for `name` of type `qtype`.
    pub fn dig_at(
        &self,
        src: &str,
        server: &str,
        name: &str,
        qtype: &str,
        tcp: bool,
    ) -> (String, Vec<String>, u64) {
        let at = format!("@{server}");
        let mut args = vec!["dig", "+tries=1", "+time=2", "-b", src, &at, name, qtype];
        if tcp {
            args.push("+tcp");
        }
        let out = self.cus.try_sh(&args).unwrap_or_else(|e| e);
        let status = out
            .lines()
            .find_map(|l| l.split("status: ").nth(1))
            .map(|s| s.split(',').next().unwrap_or("").to_string())
            .unwrap_or_else(|| format!("no answer: {out}"));
        let answers = out
            .lines()
            .skip_while(|l| !l.starts_with(";; ANSWER SECTION"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().last().map(String::from))
            .collect();
        let ms = out
            .lines()
            .find_map(|l| l.strip_prefix(";; Query time: "))
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(u64::MAX);
        (status, answers, ms)
    }

    /// `curl` from `src` to `scheme://name/` at the web server: (exit code, body, stderr,
    /// elapsed).
    pub fn curl(&self, src: &str, scheme: &str, name: &str) -> (i32, String, String, Duration) {
        self.curl_at(src, WEB, scheme, name)
    }

    /// `curl` from `src` to `scheme://name/` at `web` (an IPv4 or IPv6 address).
    pub fn curl_at(
        &self,
        src: &str,
        web: &str,
        scheme: &str,
        name: &str,
    ) -> (i32, String, String, Duration) {
        let port = if scheme == "https" { 443 } else { 80 };
        let addr = if web.contains(':') {
            format!("[{web}]")
        } else {
            web.to_string()
        };
        let resolve = format!("{name}:{port}:{addr}");
        let url = format!("{scheme}://{name}/");
        let t = Instant::now();
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.cus.name,
                "curl",
                "-sSk",
                "-m",
                "5",
                "--interface",
                src,
                "--resolve",
                &resolve,
                &url,
            ])
            .output()
            .expect("curl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            t.elapsed(),
        )
    }

    /// The inspector's pid, as `mssp status` says.
    pub fn inspector_pid(&self) -> i32 {
        self.filtering_status()["inspector_pid"]
            .as_i64()
            .expect("inspector pid") as i32
    }
}
