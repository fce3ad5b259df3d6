//! The line editor of the interactive client (stdin on a terminal): a
//! `> ` prompt, history (Up/Down), messages printed above the line being
//! typed (which is kept and drawn again below them), and the slash
//! commands. Built on rustyline; the editor runs on a thread of its own.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustyline::config::{Behavior, Config};
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use tokio::sync::mpsc;

/// The prompt in front of the line being typed.
pub const PROMPT: &str = "> ";

/// What `/help` prints.
pub const HELP: &str = "\
commands:
  /ping [DATA]            send a ping; its pong is shown
  /close [CODE [REASON]]  close with CODE (default: --close-code) and REASON, and exit
  /binary HEX             send a binary message (hex bytes, spaces allowed)
  /help                   this list
  //TEXT                  send \"/TEXT\": a message that starts with a slash
Up/Down: earlier lines; Ctrl-C or Ctrl-D: close (with --close-code) and exit";

/// Prints lines above the prompt, from any thread.
pub type Above = Box<dyn ExternalPrinter + Send>;

/// What the user did at the prompt.
#[derive(Debug)]
pub enum Typed {
    /// A line, ended with Enter.
    Line(String),
    /// Ctrl-C.
    Interrupt,
    /// Ctrl-D on an empty line.
    Eof,
    /// The terminal could not be read.
    Failed(String),
}

/// A line editor ready to start: made before connecting, so that the
/// session knows whether the terminal can have one.
pub struct LineEditor {
    editor: DefaultEditor,
    above: Option<Above>,
}

/// A running editor: its lines, and the way to ask for the next one.
pub struct Running {
    /// Each line typed, then how the editing ended.
    pub typed: mpsc::Receiver<Typed>,
    next: std::sync::mpsc::Sender<()>,
    restore: Restore,
}

impl LineEditor {
    /// An editor on the terminal (`/dev/tty`, which stdin is), or `None`
    /// when the terminal cannot have one (`TERM=dumb`, no `/dev/tty`).
    pub fn new() -> Option<LineEditor> {
        let config = Config::builder()
            // The prompt and the line go to the terminal even when stdout
            // is a pipe.
            .behavior(Behavior::PreferTerm)
            .auto_add_history(true)
            .max_history_size(1000)
            .ok()?
            .build();
        let mut editor = DefaultEditor::with_config(config).ok()?;
        let above = editor.create_external_printer().ok()?;
        Some(LineEditor {
            editor,
            above: Some(Box::new(above)),
        })
    }

    /// Takes the printer of lines above the prompt (there is one). While it
    /// lives, the editor prints what it is given above the line being typed.
    pub fn take_above(&mut self) -> Option<Above> {
        self.above.take()
    }

    /// Starts reading lines on a thread of its own. After each
    /// [`Typed::Line`], the next line is read once [`Running::next_line`]
    /// is called, so that a `/close` is not followed by a prompt.
    pub fn start(self) -> Running {
        let mut editor = self.editor;
        let (tx, typed) = mpsc::channel(1);
        let (next, go) = std::sync::mpsc::channel::<()>();
        let restore = Restore::save();
        let reading = restore.reading.clone();
        std::thread::spawn(move || loop {
            reading.store(true, Ordering::SeqCst);
            let read = editor.readline(PROMPT);
            reading.store(false, Ordering::SeqCst);
            let (event, more) = match read {
                Ok(line) => (Typed::Line(line), true),
                Err(ReadlineError::Interrupted) => (Typed::Interrupt, false),
                Err(ReadlineError::Eof) => (Typed::Eof, false),
                Err(e) => (Typed::Failed(e.to_string()), false),
            };
            if tx.blocking_send(event).is_err() || !more || go.recv().is_err() {
                break;
            }
        });
        Running {
            typed,
            next,
            restore,
        }
    }
}

impl Running {
    /// Reads the next line.
    pub fn next_line(&self) {
        let _ = self.next.send(());
    }

    /// The session is over: if the editor is still waiting for a key, the
    /// terminal is put back as it was (rustyline does it when a line ends,
    /// which it will not now) and the cursor moved below the prompt.
    pub fn finish(self) {
        self.restore.restore();
    }
}

/// The terminal's settings before the editor changed them.
struct Restore {
    /// The editor is waiting for a key (the terminal is in raw mode).
    reading: Arc<AtomicBool>,
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

impl Restore {
    fn save() -> Restore {
        Restore {
            reading: Arc::new(AtomicBool::new(false)),
            #[cfg(unix)]
            saved: nix::sys::termios::tcgetattr(std::io::stdin()).ok(),
        }
    }

    fn restore(&self) {
        if !self.reading.load(Ordering::SeqCst) {
            return;
        }
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSADRAIN,
                saved,
            );
        }
        // Bracketed paste off (the editor turns it on while it reads), and
        // the next line for what comes after.
        if let Ok(mut tty) = std::fs::OpenOptions::new().write(true).open("/dev/tty") {
            let _ = tty.write_all(b"\x1b[?2004l\n");
            let _ = tty.flush();
        }
    }
}

/// A line typed at the prompt, as the session acts on it.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Send this text (a line that starts with `//` loses one slash).
    Send(&'a str),
    /// `/ping [DATA]`.
    Ping(&'a str),
    /// `/close [CODE [REASON]]`: `None` for the --close-code and
    /// --close-reason of the command line.
    Close(Option<(u16, &'a str)>),
    /// `/binary HEX`.
    Binary(&'a str),
    /// `/help`.
    Help,
    /// Not a command, or a command used wrongly: what to say.
    Wrong(String),
}

/// What `line` asks for.
pub fn parse(line: &str) -> Command<'_> {
    if line.starts_with("//") {
        return Command::Send(&line[1..]);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Command::Send(line);
    };
    let (name, args) = match rest.split_once(' ') {
        Some((name, args)) => (name, args),
        None => (rest, ""),
    };
    match name {
        "ping" => Command::Ping(args),
        "close" => {
            let args = args.trim_start();
            if args.is_empty() {
                return Command::Close(None);
            }
            let (code, reason) = args.split_once(' ').unwrap_or((args, ""));
            match code.parse::<u16>() {
                Ok(code) => Command::Close(Some((code, reason))),
                Err(_) => Command::Wrong(format!(
                    "/close takes a close code (a number like 1000 or 4000), not {code:?}"
                )),
            }
        }
        "binary" if args.trim().is_empty() => {
            Command::Wrong("/binary takes the bytes to send, in hex: /binary 00ff".to_owned())
        }
        "binary" => Command::Binary(args),
        "help" | "?" => Command::Help,
        _ => Command::Wrong(format!(
            "unknown command /{name}; /help lists them (start a message with // to send one that begins with /)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_or_commands() {
        assert_eq!(parse("hello"), Command::Send("hello"));
        assert_eq!(parse(""), Command::Send(""));
        assert_eq!(parse(" /ping"), Command::Send(" /ping"));
        assert_eq!(parse("//ping"), Command::Send("/ping"));
        assert_eq!(parse("///"), Command::Send("//"));
        assert_eq!(parse("/ping"), Command::Ping(""));
        assert_eq!(parse("/ping are you there"), Command::Ping("are you there"));
        assert_eq!(parse("/close"), Command::Close(None));
        assert_eq!(parse("/close 4000"), Command::Close(Some((4000, ""))));
        assert_eq!(
            parse("/close 4000 bye now"),
            Command::Close(Some((4000, "bye now")))
        );
        assert!(matches!(parse("/close soon"), Command::Wrong(_)));
        assert_eq!(parse("/binary 00 ff"), Command::Binary("00 ff"));
        assert!(matches!(parse("/binary"), Command::Wrong(_)));
        assert_eq!(parse("/help"), Command::Help);
        assert!(matches!(parse("/nope"), Command::Wrong(w) if w.contains("/nope")));
    }
}
