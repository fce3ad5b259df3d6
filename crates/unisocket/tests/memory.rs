//! What a connection allocates, counted by a wrapper around the system
//! allocator:
//! - once idle, it gives back the buffers its traffic grew: read buffers
//!   after large messages or a burst of small ones, the pool of
//!   large-message buffers, and write buffers after large sends. Without
//!   this, each idle connection would keep the memory of the largest traffic
//!   it saw (hundreds of KiB), for as long as it stays open;
//! - small messages cost no allocation of their own, received or sent; a
//!   send whose outcome is awaited gets its `SendSuccess`, whose `err_msg`
//!   is a `String`.
//!
//! The tests take turns (`SERIAL`), each with a runtime of its own, and the
//! file takes only the allocator and the bounded waits of the shared test
//! support, not the rest (whose codec tests would run beside them): nothing
//! else runs in the process while one measures. The servers are raw ones
//! whose connections allocate nothing once open.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use unisocket::{connect_socket, ConnectOptions, Data, SocketTask};

#[path = "support/alloc.rs"]
mod alloc;
use alloc::Counting;
#[path = "support/wait.rs"]
mod wait;
use wait::bounded;

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Held by each test while it runs, so that they measure one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `test` alone, on a current-thread runtime made (and dropped) for it.
fn alone<F: std::future::Future>(test: F) -> F::Output {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(test)
}

/// Tasks per kind of traffic.
const TASKS: usize = 12;
/// What each kind of traffic is.
const LARGE_MESSAGES: usize = 8;
const LARGE: usize = 64 * 1024;
const SMALL_MESSAGES: usize = 3000;
const SMALL: usize = 100;
const LARGE_SENDS: usize = 4;
const LARGE_SEND: usize = 256 * 1024;
/// How much of its traffic's memory an idle task may keep, on average: a
/// small read and a small write buffer, and the odd timer.
const IDLE_KEEPS: isize = 4 * 1024;

/// `n` unmasked binary frames of `size` bytes (`size` at least 126).
fn binary_frames(n: usize, size: usize) -> Vec<u8> {
    let mut frame = vec![0x82];
    if size < 1 << 16 {
        frame.push(126);
        frame.extend_from_slice(&(size as u16).to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(size as u64).to_be_bytes());
    }
    frame.resize(frame.len() + size, 7);
    frame.repeat(n)
}

/// `n` unmasked binary frames of `size` bytes (`size` at most 125).
fn small_binary_frames(n: usize, size: usize) -> Vec<u8> {
    let mut frame = vec![0x82, size as u8];
    frame.resize(2 + size, 7);
    frame.repeat(n)
}

/// Reads an opening handshake and answers it with a 101.
async fn handshake(stream: &mut TcpStream) -> Option<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8(head).ok()?;
    let key = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_string())
    })?;
    let accept = unisocket_proto::handshake::accept_key(&key);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await.ok()
}

/// A server on 127.0.0.1 that answers the handshake, then on its `go`
/// permit writes `burst`, then reads and drops whatever comes until the
/// client leaves; once open, its connections allocate nothing.
async fn server(burst: Vec<u8>, go: Arc<Semaphore>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/", listener.local_addr().expect("local_addr"));
    let burst = Arc::new(burst);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (burst, go) = (burst.clone(), go.clone());
            tokio::spawn(async move {
                if handshake(&mut stream).await.is_none() {
                    return;
                }
                let mut sink = [0u8; 2048];
                let Ok(permit) = go.acquire().await else {
                    return;
                };
                permit.forget();
                if stream.write_all(&burst).await.is_err() {
                    return;
                }
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    url
}

async fn open(url: &str, n: usize) -> Vec<SocketTask> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let task = connect_socket(ConnectOptions::new(url).no_proxy());
        bounded("the open", task.opened())
            .await
            .expect("the task opens");
        tasks.push(task);
    }
    tasks
}

/// Receives `n` messages of `size` bytes on each task, dropping each.
async fn receive(tasks: &[SocketTask], n: usize, size: usize) {
    for task in tasks {
        for _ in 0..n {
            let data = bounded("a message", task.recv()).await.expect("a message");
            assert_eq!(data.len(), size);
        }
    }
}

/// The heap once the tasks' drivers had time to settle.
async fn heap_after(pause: Duration) -> isize {
    tokio::time::sleep(pause).await;
    alloc::in_use()
}

#[test]
fn an_idle_connection_gives_back_what_its_traffic_grew() {
    alone(idle_connections_give_back())
}

async fn idle_connections_give_back() {
    let (go_large, go_small) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
    let url_large = server(binary_frames(LARGE_MESSAGES, LARGE), go_large.clone()).await;
    let url_small = server(small_binary_frames(SMALL_MESSAGES, SMALL), go_small.clone()).await;
    let url_sink = server(Vec::new(), Arc::new(Semaphore::new(TASKS))).await;
    let readers_large = open(&url_large, TASKS).await;
    let readers_small = open(&url_small, TASKS).await;
    let senders = open(&url_sink, TASKS).await;
    let payload = Data::Binary(vec![7u8; LARGE_SEND].into());

    heap_after(Duration::from_millis(100)).await;

    // One kind of traffic at a time, so that no other kind's buffers come
    // or go while it is measured: busy, the tasks hold buffers of the
    // traffic's size (what is checked is that they are given back, not
    // that they never grew); idle, they give them back one to two times
    // `IDLE_RELEASE` (1 s) after their last read or write.
    let mut report = Vec::new();
    for traffic in ["large messages", "small messages", "large sends"] {
        let before = alloc::in_use();
        match traffic {
            "large messages" => {
                go_large.add_permits(TASKS);
                receive(&readers_large, LARGE_MESSAGES, LARGE).await;
            }
            "small messages" => {
                go_small.add_permits(TASKS);
                receive(&readers_small, SMALL_MESSAGES, SMALL).await;
            }
            _ => {
                for task in &senders {
                    for _ in 0..LARGE_SENDS {
                        bounded("a send", task.send(payload.clone()))
                            .await
                            .expect("the send succeeds");
                    }
                }
            }
        }
        let per_task = |heap: isize| (heap - before) / TASKS as isize;
        let grown = per_task(heap_after(Duration::from_millis(20)).await);
        assert!(
            grown > 16 * 1024,
            "after {traffic}, a task holds {grown} more bytes: expected buffers of the traffic's size"
        );
        // Within 2 s, and then some for a slow machine.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let kept = loop {
            let kept = per_task(heap_after(Duration::from_millis(100)).await);
            if kept < IDLE_KEEPS || tokio::time::Instant::now() > deadline {
                break kept;
            }
        };
        report.push((traffic, grown, kept));
        assert!(
            kept < IDLE_KEEPS,
            "after {traffic}, an idle task keeps {kept} of the {grown} bytes it grew"
        );
    }
    eprintln!("bytes per task (traffic, grown, kept once idle): {report:?}");
    drop((readers_large, readers_small, senders, payload));
}

/// Allocations per message while `n` messages go through `step`.
async fn allocations_per_message<F, Fut>(n: usize, mut step: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let before = alloc::allocations();
    for _ in 0..n {
        step().await;
    }
    (alloc::allocations() - before) as f64 / n as f64
}

#[test]
fn small_messages_cost_no_allocation_of_their_own() {
    alone(small_messages())
}

async fn small_messages() {
    const WARM_UP: usize = 2_000;
    const MEASURED: usize = 20_000;
    let go = Arc::new(Semaphore::new(1));
    let url = server(small_binary_frames(WARM_UP + MEASURED, SMALL), go).await;
    let task = open(&url, 1).await.remove(0);
    let data = Data::Binary(vec![7u8; SMALL].into());

    // Received: cut from the read buffer, with nothing allocated for them.
    let recv = || async {
        let got = bounded("a message", task.recv()).await.expect("a message");
        assert_eq!(got.len(), SMALL);
    };
    allocations_per_message(WARM_UP, recv).await;
    let received = allocations_per_message(MEASURED, recv).await;

    // Sent, by a connection that has been idle (and gave back what the
    // messages above grew), as most connections that send now and then are:
    // a `Completion` takes its outcome from the task's ledger, with nothing
    // allocated for it. Only a send whose outcome is awaited gets its
    // `SendSuccess`, whose `err_msg` is a `String`: here one in 16, as a
    // writer that awaits the last send of each batch (`drop` of the others
    // does not cancel them).
    let mut sent = 0;
    let mut send = || {
        sent += 1;
        let completion = task.send(data.clone());
        let last_of_batch = sent % 16 == 0;
        async move {
            if last_of_batch {
                bounded("a send", completion)
                    .await
                    .expect("the send succeeds");
            }
        }
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    allocations_per_message(WARM_UP, &mut send).await;
    let sent = allocations_per_message(MEASURED, &mut send).await;
    eprintln!("allocations per message: received {received}, sent {sent}");
    // What is left is amortized: queues and read buffers that grow (and
    // shrink again once drained), about one block per 80 messages here.
    assert!(
        received < 0.1,
        "receiving a small message allocates {received} blocks"
    );
    assert!(
        sent < 1.0 / 16.0 + 0.05,
        "sending a small message allocates {sent} blocks"
    );
}

/// A connection whose peer stopped reading keeps the buffers of the bytes it
/// waits to write, and sleeps until the socket takes them: it does not wake
/// every second to find that it has nothing to give back (which made and
/// freed its timer each time).
#[test]
fn a_connection_waiting_for_its_peer_to_read_sleeps() {
    alone(waiting_for_the_peer())
}

async fn waiting_for_the_peer() {
    // Never given its permit, the server never reads.
    let url = server(Vec::new(), Arc::new(Semaphore::new(0))).await;
    let task = open(&url, 1).await.remove(0);
    // More than the kernel's socket buffers take on loopback.
    let payload = Data::Binary(vec![7u8; 1 << 20].into());
    for _ in 0..32 {
        drop(task.send(payload.clone()));
    }
    // The writes stall; the release that the burst of sends armed comes and
    // goes within 2 s of the last write.
    let mut last = task.buffered_amount();
    loop {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let now = task.buffered_amount();
        assert!(now > 0, "the peer took 32 MiB without reading");
        if now == last {
            break;
        }
        last = now;
    }
    let before = alloc::allocations();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let allocations = alloc::allocations() - before;
    assert_eq!(task.buffered_amount(), last, "the writes went on");
    assert!(
        allocations == 0,
        "a connection waiting for its peer made {allocations} allocations in 3.5 s"
    );
}
