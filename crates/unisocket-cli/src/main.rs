//! `unisocket`: a WebSocket command-line tool built on the unisocket library.

mod bench;
mod client;
mod demo;
mod diagnose;
mod editor;
mod redirect;
mod server;
mod signals;
mod style;

use clap::{CommandFactory, Parser, Subcommand};

/// Exit codes shared by every mode.
pub mod exit {
    /// The connection closed with a closing handshake (or the command succeeded).
    pub const OK: i32 = 0;
    /// Any other failure (no runtime, cannot listen, nothing measured, a
    /// `bench` server that does not echo, ...).
    pub const FAILURE: i32 = 1;
    /// Bad arguments: found by clap or by our own checks, before any connection.
    pub const USAGE: i32 = 2;
    /// The connection could not be opened (DNS, refused, TLS, handshake, timeout).
    pub const CONNECT: i32 = 3;
    /// The connection ended abnormally: no closing handshake, or an error after open.
    pub const ABNORMAL: i32 = 4;
    /// With `--fail-on-close-code`: the server closed cleanly, but with an
    /// error code (not 1000, 1001, none, or the echo of ours).
    pub const CLOSE_CODE: i32 = 5;
    /// An interactive session ended by Ctrl-C before the connection opened,
    /// or by a second Ctrl-C while its close was under way (128 + SIGINT,
    /// as a shell reports a process that Ctrl-C ended).
    pub const INTERRUPTED: i32 = 130;
}

const EXAMPLES: &str = "\
Examples:
  unisocket                                   demo: embedded echo server and a live session
  unisocket ws://127.0.0.1:9001               interactive: stdin lines out, messages in
  unisocket wss://example.com/ws -H 'Authorization: Bearer t0k' -p chat.v1
  unisocket ws://127.0.0.1:9001 -x hello -w 1 send, print replies until 1 s passes without one, close
  unisocket ws://127.0.0.1:9001 --json < lines.txt
  unisocket ws://127.0.0.1:9001 -b --file blob.bin --binary-format raw > reply.bin
  unisocket wss://localhost:8443 --ca cert.pem   a self-signed server certificate, trusted
  unisocket wss://feed.example/ws --reconnect --ping-timeout 10
  unisocket wss://example.com/old -L -v          follow redirects; -v shows a refused upgrade's response
  unisocket serve --port 9001 --mode broadcast
  unisocket bench ws://127.0.0.1:9001 --conns 8 --size 1024 --duration 5

Exit codes:
  0 clean close   1 other failure   2 usage error   3 could not connect   4 abnormal close
  5 the server closed with an error code (with --fail-on-close-code)
  130 interactive: Ctrl-C before the connection opened, or again while closing";

/// A WebSocket client, test server and benchmark built on the uni-app socket API.
///
/// With no arguments, starts an embedded echo server on 127.0.0.1 and runs a
/// short live session against it (no network needed). With a URL, an
/// interactive client: each stdin line is sent as a message and received
/// messages are printed on stdout; status lines go to stderr. On a
/// terminal, lines are typed at a `> ` prompt with history (Up/Down), and
/// /help lists the commands (/ping, /close, /binary).
#[derive(Parser, Debug)]
#[command(name = "unisocket", version, after_help = EXAMPLES)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// No colours, even on a terminal (as NO_COLOR=1 does).
    #[arg(long, global = true)]
    no_color: bool,
    #[command(flatten)]
    client: client::ClientArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a WebSocket test server: echo, or broadcast to every client.
    #[command(after_help = "\
Examples:
  unisocket serve                              echo server on ws://127.0.0.1:9001
  unisocket serve --port 0 --mode broadcast    broadcast server on a free port
  unisocket serve --port 8443 --cert cert.pem --key key.pem   wss:// (clients: --ca cert.pem)

The first line on stdout is always `listening on ws://HOST:PORT (MODE mode)`
(wss:// with --cert). Ctrl-C or SIGTERM closes every connection with 1001
(going away), waits up to 2 s for the clients' answers, and exits 0.")]
    Serve(server::ServeArgs),
    /// Measure an echo server: round trips per second, MB/s and latency.
    #[command(after_help = "\
Examples:
  unisocket bench ws://127.0.0.1:9001
  unisocket bench ws://127.0.0.1:9001 --conns 16 --size 4096 --duration 10 --text

Each connection sends a message and waits for its echo before sending the
next (one in flight per connection); latency is measured per round trip.
Each message starts with its connection's number and its sequence number
(16 bytes, the smallest --size), and each reply must be the message that
connection sent: any other reply (a broadcast server's, for one) stops the
run with an error and exit code 1.")]
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    if cli.no_color {
        style::disable_color();
    }
    let code = match cli.command {
        Some(Command::Serve(args)) => server::run(&args),
        Some(Command::Bench(args)) => bench::run(&args),
        None => match cli.client.connect.clone().or(cli.client.url.clone()) {
            Some(url) => client::run(url, cli.client),
            // Options given, but no URL: clap has already handled --help and
            // --version, so anything on the command line is a client option.
            None if std::env::args_os().skip(1).any(|a| a != "--no-color") => Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "these options need a URL: unisocket [OPTIONS] <URL>",
                )
                .exit(),
            None => demo::run(),
        },
    };
    std::process::exit(code);
}
