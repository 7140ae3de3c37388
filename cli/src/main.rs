//! `quip`: parses flags and runs the interactive program or one script subcommand.

/// Prints a line on stdout, made safe for the terminal first ([`quip_cli::display::safe`]).
/// Every line the program prints goes through this or [`complain!`], so text from the
/// network never reaches the terminal as it came.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", quip_cli::display::safe(&format!($($arg)*)))
    };
}

/// Prints a line on stderr, made safe for the terminal first.
macro_rules! complain {
    ($($arg:tt)*) => {
        eprintln!("{}", quip_cli::display::safe(&format!($($arg)*)))
    };
}

mod args;
mod commands;
mod progress;
mod ui;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUIP_LOG")
                .unwrap_or_else(|_| "warn,quinn=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            complain!("quip: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Don't wait for lingering tasks (a reader blocked on a closed connection).
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(code) => code,
        Err(err) if commands::no_service(&err) => {
            // The original's words, exactly.
            say!("Sorry, No services available");
            ExitCode::from(commands::exit_code(&err))
        }
        Err(err) => {
            complain!("quip: {err:#}");
            ExitCode::from(commands::exit_code(&err))
        }
    }
}
