//! The heartbeat on the sans-io clock: no sleeping, `Instant`s go in.

use std::time::{Duration, Instant};

use super::test_server::{server_text, ServerCodec, OP_PING};
use super::{Config, Connection, Heartbeat, State};

const INTERVAL: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(3);

fn connection(t0: Instant) -> Connection {
    let mut c = Connection::new(Config {
        heartbeat: Some(Heartbeat {
            interval: INTERVAL,
            timeout: TIMEOUT,
        }),
        ..Config::default()
    });
    c.handle_timeout(t0);
    c
}

/// The ping frames the client wrote since the last call.
fn pings(c: &mut Connection, server: &mut ServerCodec) -> usize {
    server.feed(&c.write_buf().split());
    let mut n = 0;
    while let Some(f) = server.next_frame().unwrap() {
        assert_eq!(f.opcode, OP_PING);
        n += 1;
    }
    n
}

#[test]
fn pings_every_interval_and_stays_open_while_the_peer_answers() {
    let t0 = Instant::now();
    let mut c = connection(t0);
    let mut server = ServerCodec::new();
    assert_eq!(c.poll_timeout(), Some(t0 + INTERVAL));
    c.handle_timeout(t0 + INTERVAL - Duration::from_millis(1));
    assert_eq!(pings(&mut c, &mut server), 0, "no ping before the interval");
    for k in 1..=5u32 {
        let now = t0 + INTERVAL * k;
        c.handle_timeout(now);
        assert_eq!(pings(&mut c, &mut server), 1, "one ping at interval {k}");
        assert_eq!(
            c.poll_timeout(),
            Some(now + TIMEOUT),
            "the pong deadline comes first"
        );
        // The pong (or any bytes) arrives in time.
        c.handle_activity();
        assert_eq!(c.poll_timeout(), Some(now + INTERVAL));
        c.handle_timeout(now + TIMEOUT);
        assert_eq!(c.state(), State::Open);
        assert_eq!(c.heartbeat_failed(), None);
    }
}

#[test]
fn silence_after_a_ping_fails_at_the_deadline_and_not_before() {
    let t0 = Instant::now();
    let mut c = connection(t0);
    let mut server = ServerCodec::new();
    let ping_at = t0 + INTERVAL;
    c.handle_timeout(ping_at);
    assert_eq!(pings(&mut c, &mut server), 1);
    c.handle_timeout(ping_at + TIMEOUT - Duration::from_nanos(1));
    assert_eq!(c.state(), State::Open);
    assert_eq!(c.heartbeat_failed(), None);
    c.handle_timeout(ping_at + TIMEOUT);
    assert_eq!(c.state(), State::Closed);
    assert_eq!(c.heartbeat_failed(), Some(TIMEOUT));
    // No close frame is written to a peer that is gone, and time stops mattering.
    assert_eq!(pings(&mut c, &mut server), 0);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn any_frame_counts_as_an_answer() {
    let t0 = Instant::now();
    let mut c = connection(t0);
    let mut server = ServerCodec::new();
    c.handle_timeout(t0 + INTERVAL);
    assert_eq!(pings(&mut c, &mut server), 1);
    c.read_buf().extend_from_slice(&server_text("still here"));
    c.handle_activity();
    assert!(c.poll_event().unwrap().is_some());
    c.handle_timeout(t0 + INTERVAL + TIMEOUT);
    assert_eq!(c.state(), State::Open);
}

#[test]
fn a_late_answer_does_not_rescue_a_failed_connection() {
    let t0 = Instant::now();
    let mut c = connection(t0);
    c.handle_timeout(t0 + INTERVAL);
    c.handle_timeout(t0 + INTERVAL + TIMEOUT);
    c.handle_activity();
    assert_eq!(c.state(), State::Closed);
    assert_eq!(c.heartbeat_failed(), Some(TIMEOUT));
}

#[test]
fn without_heartbeat_there_is_no_timer() {
    let t0 = Instant::now();
    let mut c = Connection::new(Config::default());
    c.handle_timeout(t0);
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(t0 + Duration::from_secs(3600));
    assert!(c.write_buf().is_empty());
    assert_eq!(c.heartbeat_failed(), None);
}
