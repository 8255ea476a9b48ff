//! Development aid: writes a 1M-entry policy (version N) and a lab PKI into a directory, for
//! profiling the push path by hand.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let version: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    std::fs::create_dir_all(&dir).unwrap();
    let mut doc = mssp_bench::policy_gen::generate(10_000, 100, 2).doc();
    doc.version = version;
    std::fs::write(
        dir.join("policy-1m.json"),
        serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();
    mssp_bench::pki::Pki::new(&dir.join("pki"));
}
