//! Runs every case of an Autobahn|Testsuite fuzzing server through the
//! public async API, echoing each message, then asks it to write its report.
//!
//! ```text
//! cargo run --release --example autobahn_client -- ws://127.0.0.1:9001 unisocket
//! ```

use std::time::Duration;

use unisocket::{connect_socket, ConnectOptions, SocketTask};

async fn connect(url: String) -> Result<SocketTask, unisocket::SocketError> {
    connect_socket(
        ConnectOptions::new(url)
            .timeout(Duration::from_secs(10))
            .close_timeout(Duration::from_secs(2))
            .per_message_deflate(true),
    )
    .await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    let agent = args.next().unwrap_or_else(|| "unisocket".to_owned());

    let counter = connect(format!("{base}/getCaseCount")).await?;
    let count: u32 = match counter.recv().await {
        Some(msg) => msg.as_text().unwrap_or("0").trim().parse()?,
        None => return Err("no case count received".into()),
    };
    while counter.recv().await.is_some() {}
    println!("{count} cases");

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match connect(url).await {
            Ok(task) => {
                while let Some(msg) = task.recv().await {
                    task.send(msg);
                }
            }
            Err(e) => eprintln!("case {case}: {e}"),
        }
        if case % 50 == 0 {
            println!("{case}/{count}");
        }
    }

    let report = connect(format!("{base}/updateReports?agent={agent}")).await?;
    while report.recv().await.is_some() {}
    println!("report updated for agent {agent}");
    Ok(())
}
