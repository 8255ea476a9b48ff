//! `mssp agent --config FILE`: the daemon.

use std::{path::Path, process::ExitCode};

use mssp_agent::{RunOptions, config::Config};
use mssp_wire::exit;

pub fn run(config: &Path, replace_pins: bool) -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mssp agent: invalid configuration: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mssp agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = RunOptions {
        config_path: Some(config.to_path_buf()),
        replace_pins,
    };
    match rt.block_on(mssp_agent::lifecycle::main(cfg, opts, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("mssp agent: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// SIGTERM or SIGINT.
pub(super) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
