//! Ctrl-C (SIGINT), and SIGTERM on Unix, as events on a channel instead of
//! the end of the process: `serve` closes its connections on them, and the
//! interactive client closes its connection.

use tokio::sync::mpsc;

/// Forwards Ctrl-C, and with `terminate` SIGTERM on Unix, as they come, by
/// name. Must be called within the runtime; from then on the signals no
/// longer end the process.
pub fn forward(terminate: bool) -> std::io::Result<mpsc::UnboundedReceiver<&'static str>> {
    let (tx, rx) = mpsc::unbounded_channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
        ];
        for (kind, name) in &kinds[..if terminate { 2 } else { 1 }] {
            let mut stream = signal(*kind)?;
            let (tx, name) = (tx.clone(), *name);
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(name).is_err() {
                        break;
                    }
                }
            });
        }
    }
    #[cfg(not(unix))]
    {
        let _ = terminate;
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if tx.send("Ctrl-C").is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}
