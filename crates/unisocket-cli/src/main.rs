//! `unisocket`: a WebSocket command-line tool built on the unisocket library.

mod client;
mod demo;
mod server;

use std::sync::Arc;

use clap::{Parser, Subcommand};

/// A WebSocket client and test server built on the uni-app socket API.
///
/// With no arguments, starts an embedded echo server on 127.0.0.1 and runs a
/// short live session against it (no network needed).
#[derive(Parser, Debug)]
#[command(
    name = "unisocket",
    version,
    after_help = "Examples:\n  unisocket                       demo against an embedded echo server\n  unisocket serve --port 9001     run an echo server"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Connect to a server (`unisocket URL`): stdin lines out, messages in.
    #[command(flatten)]
    client: Option<client::ClientArgs>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a WebSocket test server (echo or broadcast).
    #[command(after_help = "Example:\n  unisocket serve --port 9001 --mode broadcast")]
    Serve {
        /// Port to listen on (0 picks a free one).
        #[arg(long, default_value_t = 9001)]
        port: u16,
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// What to do with each message.
        #[arg(long, value_enum, default_value_t = server::Mode::Echo)]
        mode: server::Mode,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match (cli.command, cli.client) {
        (None, Some(args)) => client::run(args),
        (None, None) => demo::run(),
        (Some(Command::Serve { port, host, mode }), _) => serve(&host, port, mode),
    };
    std::process::exit(code);
}

fn serve(host: &str, port: u16, mode: server::Mode) -> i32 {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unisocket: cannot start a runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async {
        let listener = match tokio::net::TcpListener::bind((host, port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("unisocket: cannot listen on {host}:{port}: {e}");
                return 2;
            }
        };
        match listener.local_addr() {
            Ok(addr) => println!("listening on ws://{addr} ({mode:?} mode)"),
            Err(e) => eprintln!("unisocket: {e}"),
        }
        let log: Arc<dyn Fn(String) + Send + Sync> = Arc::new(|line| println!("{line}"));
        match server::serve(listener, mode, log).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("unisocket: server stopped: {e}");
                1
            }
        }
    })
}
