//! The browser engine (`wasm32`): the browser's own `WebSocket` behind the
//! same seam as the native driver (`task/engine.rs`), on the page's event
//! loop. The browser speaks the protocol (framing, masking, TLS, pings,
//! compression); this engine turns its events into the task's, runs the
//! same attempts as the native driver (`attempt.rs`: sends queued before
//! open, reconnects, a `close` while connecting) and does what the
//! `WebSocket` object leaves out: the connect timeout, the close timeout
//! and the message size limit. What the browser cannot do is refused by
//! [`prepare`], option by option, before anything starts.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::convert::FromWasmAbi;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BinaryType, WebSocket};

use crate::attempt::{
    end_during_backoff, take_abort, wait_backoff, wait_for_abort, Abort, Early, EndGuard, Ended,
};
use crate::data::{Data, Text};
use crate::error::{Api, ErrorKind, SocketError};
use crate::events::{CloseEvent, OpenEvent, Profile};
use crate::options::{CloseSuccess, ConnectOptions, ProxyChoice, SendSuccess};
use crate::proto::deflate::DeflateConfig;
use crate::proto::Limits;
use crate::reconnect::ReconnectPolicy;
use crate::task::{fail_command, Command, Reply, Shared};

/// What the browser engine needs to open and run one connection.
pub(crate) struct Params {
    url: String,
    protocols: Vec<String>,
    timeout: Duration,
    close_timeout: Duration,
    max_message_size: usize,
    max_held_bytes: usize,
    reconnect: Option<ReconnectPolicy>,
    queue_until_open: bool,
    max_queued_bytes: usize,
}

/// A failure of `connectSocket` because the browser cannot do `what`
/// (`why`, if not empty, says what it does instead).
pub(crate) fn unsupported(what: &str, why: &str) -> SocketError {
    let why = if why.is_empty() {
        String::new()
    } else {
        format!(" ({why})")
    };
    SocketError::new(
        Api::ConnectSocket,
        ErrorKind::Unsupported,
        format_args!("{what} not supported in the browser{why}"),
    )
}

/// Checks the options as on native, then refuses each one the browser's
/// `WebSocket` cannot honour (README, "In the browser"): a program never
/// runs with an option silently ignored.
pub(crate) fn prepare(options: ConnectOptions) -> Result<Box<Params>, SocketError> {
    let defaults = ConnectOptions::new("");
    if !options.headers.is_empty() {
        return Err(unsupported("custom headers are", ""));
    }
    if crate::connect::url_credentials(&options.url).is_some() {
        return Err(unsupported(
            "credentials in the URL are",
            "the browser sends no Authorization header",
        ));
    }
    if matches!(options.proxy, ProxyChoice::Url(_)) {
        return Err(unsupported(
            "proxies are",
            "the browser uses its own proxy settings",
        ));
    }
    if options.tls != defaults.tls {
        return Err(unsupported(
            "TLS settings (CAs, client certificates, skipping verification) are",
            "the browser uses its own certificate store",
        ));
    }
    if options
        .deflate
        .is_some_and(|d| d != DeflateConfig::default())
    {
        return Err(unsupported(
            "permessage-deflate parameters are",
            "the browser negotiates compression itself",
        ));
    }
    if options.heartbeat.is_some() {
        return Err(unsupported(
            "heartbeat pings are",
            "the browser cannot send pings",
        ));
    }
    if options.receive_while_closing {
        return Err(unsupported(
            "receive_while_closing is",
            "the browser drops messages once it closes",
        ));
    }
    if options.max_send_frame_size.is_some() {
        return Err(unsupported(
            "max_send_frame_size is",
            "the browser sends each message as it frames it",
        ));
    }
    if options.tcp_no_delay != defaults.tcp_no_delay {
        return Err(unsupported("tcp_no_delay is", "the browser sets it"));
    }
    let Limits {
        max_message_size,
        max_frame_size,
        max_handshake_response,
    } = options.limits;
    if max_frame_size != defaults.limits.max_frame_size
        || max_handshake_response != defaults.limits.max_handshake_response
    {
        return Err(unsupported(
            "frame and handshake size limits are",
            "the browser reads frames and the handshake itself; max_message_size works",
        ));
    }
    crate::connect::check(&options)?;
    Ok(Box::new(Params {
        url: options.url,
        protocols: options.protocols,
        timeout: options
            .timeout
            .unwrap_or_else(crate::connect::network_timeout),
        close_timeout: options.close_timeout,
        max_message_size,
        max_held_bytes: options.max_held_bytes,
        reconnect: options.reconnect,
        queue_until_open: options.queue_until_open,
        max_queued_bytes: options.max_queued_bytes,
    }))
}

/// Runs the task's connections on the page's event loop.
pub(crate) fn spawn(shared: Arc<Shared>, params: Box<Params>) {
    wasm_bindgen_futures::spawn_local(run(shared, params));
}

async fn run(shared: Arc<Shared>, params: Box<Params>) {
    let _guard = EndGuard {
        shared: shared.clone(),
        stopped: "the connection task stopped",
    };
    let mut early = Early::new(params.queue_until_open, params.max_queued_bytes);
    let mut attempt: u32 = 0;
    loop {
        let started = now_ms();
        let mut outcome = open(&shared, &params, &mut early).await;
        if outcome.is_ok() && !shared.begin_open() {
            outcome = Err(take_abort(&shared, &mut early));
        }
        let ended = match outcome {
            Err(abort) => Ended::unopened(&shared, abort),
            Ok(socket) => {
                attempt = 0;
                let mut conn = Conn::new(&shared, &params, socket);
                shared.opened(OpenEvent {
                    header: Default::default(),
                    protocol: conn.socket.ws.protocol(),
                    profile: Profile {
                        total: Duration::from_secs_f64((now_ms() - started).max(0.0) / 1000.0),
                        ..Profile::default()
                    },
                });
                for cmd in early.drain() {
                    conn.command(cmd);
                }
                early.shrink();
                let close = poll_fn(|cx| conn.poll(cx)).await;
                Ended::closed(close, conn.close_replies)
            }
        };
        if let Some(delay) = ended.reconnect_delay(&shared, params.reconnect.as_ref(), &mut attempt)
        {
            match wait_backoff(&shared, &mut early, Sleep::new(delay)).await {
                None => continue,
                Some(abort) => return end_during_backoff(&shared, &mut early, abort),
            }
        }
        return ended.end_task(&shared, &mut early);
    }
}

/// Opens one connection: the browser's `WebSocket` until its `open` event,
/// bounded by the connect timeout; a `close` meanwhile aborts it, and sends
/// wait in `early`.
async fn open(shared: &Shared, params: &Params, early: &mut Early) -> Result<Socket, Abort> {
    let socket = Socket::new(&params.url, &params.protocols).map_err(Abort::Failed)?;
    let mut timeout = pin!(Sleep::new(params.timeout));
    let mut abort = pin!(wait_for_abort(shared, early));
    let opened = poll_fn(|cx| {
        if let Poll::Ready(abort) = abort.as_mut().poll(cx) {
            return Poll::Ready(Err(abort));
        }
        if timeout.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Abort::Failed(SocketError::new(
                Api::ConnectSocket,
                ErrorKind::Timeout,
                format_args!("timed out after {} ms", params.timeout.as_millis()),
            ))));
        }
        socket.poll_open(cx).map(|r| r.map_err(Abort::Failed))
    })
    .await;
    opened.map(|()| socket)
}

/// What the socket's event handlers saw, for the engine's next turn.
#[derive(Default)]
struct Inbox {
    opened: bool,
    /// An `error` event came (the browser tells nothing more).
    error: bool,
    messages: VecDeque<Data>,
    closed: Option<CloseEvent>,
    waker: Option<Waker>,
}

impl Inbox {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

type Handler<E> = Closure<dyn FnMut(E)>;

/// A handler of the socket's `E` events: notes each one in the inbox, then
/// wakes the engine.
fn handler<E>(inbox: &Rc<RefCell<Inbox>>, note: fn(&mut Inbox, E)) -> Handler<E>
where
    E: FromWasmAbi + 'static,
{
    let inbox = inbox.clone();
    Closure::new(move |ev: E| {
        let mut inbox = inbox.borrow_mut();
        note(&mut inbox, ev);
        inbox.wake();
    })
}

/// The browser's `WebSocket` and the handlers that fill its [`Inbox`].
struct Socket {
    ws: WebSocket,
    inbox: Rc<RefCell<Inbox>>,
    _handlers: (
        Handler<web_sys::Event>,
        Handler<web_sys::MessageEvent>,
        Handler<web_sys::Event>,
        Handler<web_sys::CloseEvent>,
    ),
}

impl Socket {
    fn new(url: &str, protocols: &[String]) -> Result<Self, SocketError> {
        let list = js_sys::Array::new();
        for p in protocols {
            list.push(&JsValue::from_str(p));
        }
        let ws = WebSocket::new_with_str_sequence(url, &list).map_err(|e| {
            // A SyntaxError or SecurityError: the URL or a port the browser
            // refuses (the URL was checked already).
            SocketError::new(
                Api::ConnectSocket,
                ErrorKind::InvalidUrl,
                format_args!("the browser refused the URL: {}", js_error(&e)),
            )
        })?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let inbox = Rc::new(RefCell::new(Inbox::default()));
        let on_open = handler(&inbox, |inbox, _: web_sys::Event| inbox.opened = true);
        let on_message = handler(&inbox, |inbox, ev: web_sys::MessageEvent| {
            inbox.messages.push_back(message_data(&ev.data()));
        });
        let on_error = handler(&inbox, |inbox, _: web_sys::Event| inbox.error = true);
        let on_close = handler(&inbox, |inbox, ev: web_sys::CloseEvent| {
            inbox.closed = Some(CloseEvent {
                code: ev.code(),
                reason: ev.reason(),
                was_clean: ev.was_clean(),
            });
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(Socket {
            ws,
            inbox,
            _handlers: (on_open, on_message, on_error, on_close),
        })
    }

    /// Ready once the `open` event came, or with the error of a failed
    /// attempt (the browser gives no reason: refused, DNS, TLS and an HTTP
    /// status all look alike to a page).
    fn poll_open(&self, cx: &Context<'_>) -> Poll<Result<(), SocketError>> {
        let mut inbox = self.inbox.borrow_mut();
        if inbox.opened {
            return Poll::Ready(Ok(()));
        }
        if let Some(close) = &inbox.closed {
            return Poll::Ready(Err(SocketError::new(
                Api::ConnectSocket,
                ErrorKind::Io,
                format_args!(
                    "the browser could not open the connection (close code {}; a page is not told why: refused, DNS, TLS or an HTTP status)",
                    close.code
                ),
            )));
        }
        inbox.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onerror(None);
        self.ws.set_onclose(None);
        // Abandoned while connecting or open (a timeout, a `close` while
        // connecting): the browser ends it.
        if self.ws.ready_state() <= WebSocket::OPEN {
            drop(self.ws.close());
        }
    }
}

/// A message's `data`: an `ArrayBuffer` (binary, as `binaryType` asks) or a
/// string (text, valid UTF-8 once the browser has decoded it).
fn message_data(data: &JsValue) -> Data {
    match data.as_string() {
        Some(s) => Data::Text(Text::from(s)),
        None => Data::Binary(Bytes::from(js_sys::Uint8Array::new(data).to_vec())),
    }
}

/// The message of a JS exception.
fn js_error(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// One open connection.
struct Conn {
    shared: Arc<Shared>,
    socket: Socket,
    close_replies: Vec<Reply<CloseSuccess>>,
    /// Started by our `close`: the server must answer within it.
    close_deadline: Option<Pin<Box<Sleep>>>,
    close_timeout: Duration,
    max_message_size: usize,
    max_held_bytes: usize,
    /// Why this engine ended the connection itself, if it did.
    failure: Option<SocketError>,
    batch: Vec<Data>,
}

impl Conn {
    fn new(shared: &Arc<Shared>, params: &Params, socket: Socket) -> Self {
        Conn {
            shared: shared.clone(),
            socket,
            close_replies: Vec::new(),
            close_deadline: None,
            close_timeout: params.close_timeout,
            max_message_size: params.max_message_size,
            max_held_bytes: params.max_held_bytes,
            failure: None,
            batch: Vec::new(),
        }
    }

    fn command(&mut self, cmd: Command) {
        let ws = &self.socket.ws;
        match cmd {
            Command::Send { data, reply } => {
                let sent = match &data {
                    Data::Text(text) => ws.send_with_str(text),
                    Data::Binary(bytes) => ws.send_with_u8_array(bytes),
                };
                match sent {
                    Ok(()) => reply.succeed(SendSuccess::ok),
                    Err(e) => reply.settle(Err(SocketError::new(
                        Api::SendSocketMessage,
                        ErrorKind::Closed,
                        format_args!("the browser refused the message: {}", js_error(&e)),
                    ))),
                }
            }
            cmd @ Command::Ping { .. } => fail_command(
                cmd,
                SocketError::new(
                    Api::SendSocketMessage,
                    ErrorKind::Unsupported,
                    "pings are not supported in the browser (a page cannot send them)",
                ),
            ),
            Command::Close {
                code,
                reason,
                reply,
            } => {
                if self.close_replies.is_empty() && self.close_deadline.is_none() {
                    if let Err(e) = ws.close_with_code_and_reason(code, &reason) {
                        reply.settle(Err(SocketError::new(
                            Api::CloseSocket,
                            ErrorKind::Unsupported,
                            format_args!("the browser refused the close: {}", js_error(&e)),
                        )));
                        return;
                    }
                    self.shared.set_closing();
                    self.close_deadline = Some(Box::pin(Sleep::new(self.close_timeout)));
                }
                self.close_replies.push(reply);
            }
        }
    }

    /// Ends the connection from this side, for `err`: the browser closes it
    /// (with 1000, the only code it lets a page give besides 3000-4999).
    fn fail(&mut self, err: SocketError) {
        if self.failure.is_none() {
            drop(self.socket.ws.close());
            self.failure = Some(err);
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<CloseEvent> {
        let (messages, closed, error) = {
            let mut inbox = self.socket.inbox.borrow_mut();
            inbox.waker = Some(cx.waker().clone());
            (
                std::mem::take(&mut inbox.messages),
                inbox.closed.take(),
                std::mem::take(&mut inbox.error),
            )
        };
        for data in messages {
            if self.failure.is_some() {
                break;
            }
            if data.len() > self.max_message_size {
                let err = SocketError::new(
                    Api::ConnectSocket,
                    ErrorKind::Protocol,
                    format_args!(
                        "message too big: {} bytes, the limit is {} (max_message_size)",
                        data.len(),
                        self.max_message_size
                    ),
                )
                .with_close_code(1009);
                self.fail(err);
                break;
            }
            self.batch.push(data);
        }
        // The listeners run here; they may send or close, which the loop
        // below takes.
        if self.shared.messages(&mut self.batch) && self.shared.held_over(self.max_held_bytes) {
            // Held for `recv` and nobody takes them: a browser cannot pause
            // reading, so the connection ends instead of growing.
            self.fail(SocketError::new(
                Api::ConnectSocket,
                ErrorKind::BufferFull,
                format_args!(
                    "more than {} bytes of messages wait unread (max_held_bytes), and the browser cannot pause reading",
                    self.max_held_bytes
                ),
            ));
        }
        if let Some(close) = closed {
            return Poll::Ready(self.ended(close, error));
        }
        while let Poll::Ready(cmd) = self.shared.poll_command(cx) {
            self.command(cmd);
        }
        if let Some(deadline) = &mut self.close_deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                self.close_deadline = None;
                return Poll::Ready(CloseEvent {
                    code: 1006,
                    reason: format!(
                        "the server did not answer the close within {} ms",
                        self.close_timeout.as_millis()
                    ),
                    was_clean: false,
                });
            }
        }
        Poll::Pending
    }

    /// The close the task reports for the browser's `close` event, after
    /// the error event of a failure (ours, or the browser's own).
    fn ended(&mut self, close: CloseEvent, browser_error: bool) -> CloseEvent {
        let (close, error) = match self.failure.take() {
            Some(err) => (
                CloseEvent {
                    code: err.close_code().unwrap_or(1006),
                    reason: err.reason().to_owned(),
                    was_clean: false,
                },
                Some(err),
            ),
            None if close.was_clean => (close, None),
            None => {
                let why = if browser_error {
                    "the browser reported an error on the connection"
                } else {
                    "the server closed the connection without a close frame"
                };
                let err = SocketError::new(Api::ConnectSocket, ErrorKind::Closed, why);
                let close = CloseEvent {
                    code: close.code,
                    reason: if close.reason.is_empty() {
                        why.to_owned()
                    } else {
                        close.reason
                    },
                    was_clean: false,
                };
                (close, Some(err))
            }
        };
        if let Some(err) = error {
            self.shared.failed(err);
        }
        close
    }
}

#[wasm_bindgen]
extern "C" {
    /// The global `setTimeout` (of a window or a worker).
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: i32) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
}

/// The browser's clock, in milliseconds (`Date.now()`: `performance` is
/// not in every worker).
fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// A timer of the page's event loop (`setTimeout`), cleared when dropped.
struct Sleep {
    fired: Rc<RefCell<(bool, Option<Waker>)>>,
    id: JsValue,
    _handler: Closure<dyn FnMut()>,
}

impl Sleep {
    fn new(delay: Duration) -> Self {
        let fired = Rc::new(RefCell::new((false, None::<Waker>)));
        let handler: Closure<dyn FnMut()> = {
            let fired = fired.clone();
            Closure::new(move || {
                let mut fired = fired.borrow_mut();
                fired.0 = true;
                if let Some(w) = fired.1.take() {
                    w.wake();
                }
            })
        };
        let ms = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
        let id = set_timeout(handler.as_ref().unchecked_ref(), ms);
        Sleep {
            fired,
            id,
            _handler: handler,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut fired = self.fired.borrow_mut();
        if fired.0 {
            Poll::Ready(())
        } else {
            fired.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        clear_timeout(&self.id);
    }
}
