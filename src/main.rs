//! The `switchyard` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const DEFAULT_CONFIG: &str = "config/switchyard.yaml";

#[derive(Parser)]
#[command(name = "switchyard", version, about = "Multi-protocol network gateway")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Binary upgrade: take the listening sockets of the gateway serving
        /// on this Unix socket, then tell it to drain and exit; serve the
        /// next upgrade on it (see docs/operations.md).
        #[arg(long, value_name = "SOCKET")]
        takeover: Option<PathBuf>,
    },
    /// Check a config file and exit (0: good, 1: problems, printed as file:line:column).
    Check {
        /// Config file.
        #[arg(default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        config: PathBuf::from(DEFAULT_CONFIG),
        takeover: None,
    });
    match command {
        Command::Check { config } => match switchyard::gateway::load(&config) {
            Ok(snapshot) => {
                let file = config.display();
                let lints = switchyard::config::lint::warnings(&snapshot.config);
                for w in lints.into_iter().chain(snapshot.warnings.iter().cloned()) {
                    eprintln!(
                        "{file}:{}:{}: {}: warning: {} ({})",
                        w.line,
                        w.column,
                        w.field,
                        w.message,
                        w.hint.unwrap_or_default()
                    );
                }
                println!("{file}: ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, takeover } => {
            switchyard::observe::init_logging();
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(switchyard::gateway::run_with(&config, takeover.as_deref())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
