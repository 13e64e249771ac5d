//! The `wsgo` command: parse the flags, run the server.

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    wsgo::server::adopt_cpu_share();
    let config = wsgo::cli::parse();
    wsgo::log::set_level(config.log_level);
    let code = if config.process == 0 {
        // The supervisor re-executes this binary with the same flags for each process.
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        wsgo::server::supervisor::run(&config, args)
    } else {
        wsgo::server::run(config)
    };
    // What the server's threads said last is written before the exit, unless stderr takes
    // nothing (see `log::defer_this_thread`).
    wsgo::log::sync_diagnostics(std::time::Duration::from_secs(2));
    code
}
