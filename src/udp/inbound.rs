//! How a UDP session's datagrams become lines for its session thread.
//!
//! The dispatcher (`udp.rs`) hands each datagram from a proven address to that session's
//! [`Inlet`]: a bounded channel, never waited on. The session thread reads the other end
//! through [`UdpLines`], the [`LineSource`] the ordinary `session::run_paced` reads from:
//! the datagrams go through the same `LineReader` as TCP bytes, so the same line limit and
//! the same cleaning apply, and a datagram that does not end in `\n` still ends its last
//! line.
//!
//! UDP cannot make a client wait, so every limit here drops instead: a datagram that finds
//! the inbox full, and a line over the client's rate (`--rate`, `--burst`). The lines
//! dropped are counted and the user is told how many, at most once a second. Silence
//! ends a session, since UDP has no hang-up: a warning line first, then the end.
//!
//! This module owns the inbox's bounds, the rate drops, the idle timer and the lines that
//! say so. It must not parse lines (the session does) or send datagrams itself: what it
//! says goes through the session's outbox like any reply.

use std::io::{self, ErrorKind, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use crate::limits::{
    UDP_DROP_NOTICE_INTERVAL, UDP_IDLE_WARNING, UDP_INBOX_BYTES, UDP_INBOX_DATAGRAMS,
};
use crate::line_reader::{Line, LineReader, LineSource};
use crate::outbox::{Entry, Outbox};
use crate::protocol::Reply;
use crate::ratelimit::TokenBucket;

/// What the session thread finds in its channel.
pub enum Arrival {
    Datagram(Vec<u8>),
    /// Look at the inbox's state: the session was hung up.
    Wake,
}

/// What the dispatcher and the session thread share about one inbox.
#[derive(Default)]
struct Inbox {
    /// Bytes of datagrams in the channel, bounded by [`UDP_INBOX_BYTES`].
    queued_bytes: AtomicUsize,
    /// Lines in datagrams the dispatcher dropped, not yet told to the user.
    dropped_lines: AtomicU64,
    hung_up: AtomicBool,
}

/// The dispatcher's end of one session's inbox (and the transport's, to hang up).
#[derive(Clone)]
pub struct Inlet {
    sender: SyncSender<Arrival>,
    inbox: Arc<Inbox>,
}

/// What became of a datagram handed to [`Inlet::deliver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Queued,
    /// The inbox was full: the datagram was dropped and its lines counted.
    Dropped,
    /// The session has ended.
    Gone,
}

/// A new session's inbox: the dispatcher's end and the session thread's.
pub fn inbox() -> (Inlet, Receiver<Arrival>) {
    let (sender, receiver) = mpsc::sync_channel(UDP_INBOX_DATAGRAMS);
    let inlet = Inlet {
        sender,
        inbox: Arc::new(Inbox::default()),
    };
    (inlet, receiver)
}

impl Inlet {
    /// Queues a copy of `datagram` for the session thread, without ever waiting: a full
    /// inbox (by count or by bytes) drops it, and its lines are counted for the user.
    pub fn deliver(&self, datagram: &[u8]) -> Delivered {
        let inbox = &self.inbox;
        let len = datagram.len();
        let reserved =
            inbox
                .queued_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                    (queued + len <= UDP_INBOX_BYTES).then_some(queued + len)
                });
        if reserved.is_err() {
            inbox.count_dropped(datagram);
            return Delivered::Dropped;
        }
        match self.sender.try_send(Arrival::Datagram(datagram.to_vec())) {
            Ok(()) => Delivered::Queued,
            Err(TrySendError::Full(_)) => {
                inbox.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                inbox.count_dropped(datagram);
                Delivered::Dropped
            }
            Err(TrySendError::Disconnected(_)) => Delivered::Gone,
        }
    }

    /// Ends the session: its next read returns end of stream. Never waits.
    pub fn hang_up(&self) {
        self.inbox.hung_up.store(true, Ordering::Release);
        // If the channel is full the thread has datagrams to read, and sees the flag then.
        let _ = self.sender.try_send(Arrival::Wake);
    }

    pub fn is_hung_up(&self) -> bool {
        self.inbox.hung_up.load(Ordering::Acquire)
    }
}

impl Inbox {
    fn count_dropped(&self, datagram: &[u8]) {
        let lines = lines_in(datagram) as u64;
        self.dropped_lines.fetch_add(lines, Ordering::AcqRel);
    }
}

/// The lines a datagram holds: one per `\n`, and one more for text after the last `\n`.
pub fn lines_in(datagram: &[u8]) -> usize {
    let newlines = datagram.iter().filter(|&&b| b == b'\n').count();
    newlines + usize::from(datagram.last().is_some_and(|&b| b != b'\n'))
}

/// Timing of a UDP session's inbound side.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Silence this long ends the session.
    pub idle: Duration,
    /// Lines per second after `burst`; 0 means no limit.
    pub rate_per_sec: u32,
    pub burst: u32,
}

/// A UDP session's lines, for `session::run_paced` with `Pacing::Upstream`.
pub struct UdpLines {
    reader: LineReader<Datagrams>,
    bucket: TokenBucket,
    /// The code that proved the address, until the first other line: a user whose greeting
    /// was slow or lost types the code again, and gets the greeting again instead of having
    /// the code taken for a name.
    code: Option<String>,
}

impl UdpLines {
    /// Lines from `receiver`; `first` holds the lines that came with the code. What this
    /// side says to the user goes into `outbox`.
    pub fn new(
        receiver: Receiver<Arrival>,
        inlet: &Inlet,
        outbox: Arc<Outbox>,
        timing: Timing,
        code: String,
        first: &[u8],
    ) -> UdpLines {
        let now = Instant::now();
        let mut datagrams = Datagrams {
            receiver,
            inbox: Arc::clone(&inlet.inbox),
            current: Vec::new(),
            read: 0,
            deadline: None,
            idle: timing.idle,
            last_heard: now,
            warned: false,
            ended_idle: false,
            dropped: 0,
            last_told: None,
            outbox,
        };
        datagrams.begin(first.to_vec());
        UdpLines {
            reader: LineReader::new(datagrams),
            bucket: TokenBucket::new(timing.burst, timing.rate_per_sec, now),
            code: Some(code),
        }
    }

    /// True if the session ended because the client fell silent.
    pub fn ended_idle(&mut self) -> bool {
        self.reader.get_mut().ended_idle
    }

    /// Takes a token for a line if the rate allows one now; never goes into debt, since a
    /// line over the rate is dropped, not delayed.
    fn within_rate(&mut self, now: Instant) -> bool {
        let mut trial = self.bucket.clone();
        let allowed = trial.take(now).is_zero();
        if allowed {
            self.bucket = trial;
        }
        allowed
    }

    /// True if `line` is the proving code again, before any other line.
    fn is_code_again(&mut self, line: &Line) -> bool {
        let again = match (&self.code, line) {
            (Some(code), Line::Text(text)) => text.trim() == code,
            _ => false,
        };
        if !again {
            self.code = None;
        }
        again
    }
}

impl LineSource for UdpLines {
    fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let Some(line) = self.reader.read_line()? else {
                return Ok(None);
            };
            if !self.within_rate(Instant::now()) {
                self.reader.get_mut().dropped += 1;
                continue;
            }
            if self.is_code_again(&line) {
                self.reader.get_mut().say(Reply::Greeting.to_string());
                continue;
            }
            return Ok(Some(line));
        }
    }

    /// Says false for a line that will be dropped, so the session never waits for the
    /// client while it holds lines to deliver.
    fn line_ready(&self) -> bool {
        let mut trial = self.bucket.clone();
        self.code.is_none() && self.reader.line_ready() && trial.take(Instant::now()).is_zero()
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.reader.get_mut().deadline = deadline;
    }
}

/// The datagrams of one session as a byte stream for the [`LineReader`], which waits
/// for them within the sign-in deadline and the idle time, and says what was dropped.
struct Datagrams {
    receiver: Receiver<Arrival>,
    inbox: Arc<Inbox>,
    /// The datagram being read, and how much of it was.
    current: Vec<u8>,
    read: usize,
    deadline: Option<Instant>,
    idle: Duration,
    last_heard: Instant,
    warned: bool,
    ended_idle: bool,
    /// Lines dropped and not yet told; when the user was last told.
    dropped: u64,
    last_told: Option<Instant>,
    outbox: Arc<Outbox>,
}

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.read < self.current.len() {
                let n = buf.len().min(self.current.len() - self.read);
                buf[..n].copy_from_slice(&self.current[self.read..self.read + n]);
                self.read += n;
                return Ok(n);
            }
            match self.next_datagram()? {
                Some(datagram) => self.begin(datagram),
                None => return Ok(0),
            }
        }
    }
}

impl Datagrams {
    /// Makes `datagram` the one being read. Its last line ends with it.
    fn begin(&mut self, mut datagram: Vec<u8>) {
        if datagram.last().is_some_and(|&b| b != b'\n') {
            datagram.push(b'\n');
        }
        self.current = datagram;
        self.read = 0;
    }

    /// Queues a line for the user; if the outbox is closed the session is ending anyway.
    fn say(&self, text: String) {
        let _ = self
            .outbox
            .send(Entry::Lines(Arc::from(format!("{text}\n"))));
    }

    /// The next datagram; `None` once the session is hung up or has been silent too long.
    /// Fails with `TimedOut` when the sign-in deadline passes.
    fn next_datagram(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if self.ended_idle || self.inbox.hung_up.load(Ordering::Acquire) {
                return Ok(None);
            }
            let arrival = match self.receiver.try_recv() {
                Ok(arrival) => Some(arrival),
                Err(TryRecvError::Empty) => self.wait()?,
                Err(TryRecvError::Disconnected) => return Ok(None),
            };
            match arrival {
                Some(Arrival::Datagram(datagram)) => {
                    let len = datagram.len();
                    self.inbox.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                    self.last_heard = Instant::now();
                    self.warned = false;
                    // An empty datagram only keeps the session alive: to the line reader
                    // zero bytes would mean the end.
                    if len > 0 {
                        return Ok(Some(datagram));
                    }
                }
                Some(Arrival::Wake) | None => {}
            }
        }
    }

    /// With nothing to read: tells the user about dropped lines if it is time, then waits
    /// for a datagram until the next thing to do. `None` means the wait ended with nothing
    /// to read: look again.
    fn wait(&mut self) -> io::Result<Option<Arrival>> {
        let now = Instant::now();
        self.tell_dropped(now);
        if let Some(deadline) = self.deadline
            && now >= deadline
        {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                "sign-in deadline passed",
            ));
        }
        let idle_end = self.last_heard + self.idle;
        if now >= idle_end {
            self.say(format!(
                "* Nothing from you for {} s: this UDP session is closed. Type a line to start again.",
                self.idle.as_secs()
            ));
            self.ended_idle = true;
            return Ok(None);
        }
        let warning_lead = UDP_IDLE_WARNING.min(self.idle / 2);
        let warn_at = idle_end - warning_lead;
        if !self.warned && now >= warn_at {
            self.warned = true;
            self.say(format!(
                "* Still there? This UDP session closes in {} s unless you send a line (Enter will do).",
                warning_lead.as_secs_f64().ceil()
            ));
        }
        let mut wake = idle_end;
        if !self.warned {
            wake = wake.min(warn_at);
        }
        if let Some(deadline) = self.deadline {
            wake = wake.min(deadline);
        }
        if let Some(tell_at) = self.next_notice(now) {
            wake = wake.min(tell_at);
        }
        match self
            .receiver
            .recv_timeout(wake.saturating_duration_since(now))
        {
            Ok(arrival) => Ok(Some(arrival)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                self.inbox.hung_up.store(true, Ordering::Release);
                Ok(None)
            }
        }
    }

    /// When the user may next be told about dropped lines, if any wait to be told.
    fn next_notice(&self, now: Instant) -> Option<Instant> {
        let waiting = self.dropped + self.inbox.dropped_lines.load(Ordering::Acquire);
        if waiting == 0 {
            return None;
        }
        let allowed = self.last_told.map(|told| told + UDP_DROP_NOTICE_INTERVAL);
        Some(allowed.map_or(now, |allowed| allowed.max(now)))
    }

    /// Tells the user how many of their lines were dropped since they were last told, at
    /// most once per [`UDP_DROP_NOTICE_INTERVAL`].
    fn tell_dropped(&mut self, now: Instant) {
        if self.next_notice(now).is_none_or(|at| now < at) {
            return;
        }
        let dropped = self.dropped + self.inbox.dropped_lines.swap(0, Ordering::AcqRel);
        self.dropped = 0;
        self.last_told = Some(now);
        self.say(drop_notice(dropped));
    }
}

/// The line that tells a UDP user how many of their lines were dropped.
pub fn drop_notice(lines: u64) -> String {
    let (noun, verb) = if lines == 1 {
        ("line", "was")
    } else {
        ("lines", "were")
    };
    format!("! Slow down: {lines} {noun} {verb} dropped.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::MemoryTransport;

    #[test]
    fn lines_in_table() {
        let rows: [(&[u8], usize); 6] = [
            (b"", 0),
            (b"\n", 1),
            (b"a", 1),
            (b"a\nb", 2),
            (b"a\nb\n", 2),
            (b"\n\n\n", 3),
        ];
        for (datagram, lines) in rows {
            assert_eq!(lines_in(datagram), lines, "{datagram:?}");
        }
    }

    #[test]
    fn a_full_inbox_drops_and_counts_never_waits() {
        let (inlet, receiver) = inbox();
        for _ in 0..UDP_INBOX_DATAGRAMS {
            assert_eq!(inlet.deliver(b"a\nb\n"), Delivered::Queued);
        }
        assert_eq!(
            inlet.deliver(b"c\nd\ne"),
            Delivered::Dropped,
            "full by count"
        );
        assert_eq!(inlet.inbox.dropped_lines.load(Ordering::SeqCst), 3);
        drop(receiver);

        let (inlet, _receiver) = inbox();
        let big = vec![b'x'; UDP_INBOX_BYTES - 10];
        assert_eq!(inlet.deliver(&big), Delivered::Queued);
        assert_eq!(
            inlet.deliver(&[b'y'; 11]),
            Delivered::Dropped,
            "full by bytes"
        );
        assert_eq!(
            inlet.deliver(&[b'y'; 10]),
            Delivered::Queued,
            "exactly full"
        );
        assert_eq!(
            inlet.inbox.queued_bytes.load(Ordering::SeqCst),
            UDP_INBOX_BYTES
        );
        let (inlet, receiver) = inbox();
        drop(receiver);
        assert_eq!(inlet.deliver(b"x\n"), Delivered::Gone);
    }

    fn lines_for(
        rate_per_sec: u32,
        burst: u32,
        idle: Duration,
    ) -> (Inlet, UdpLines, Arc<MemoryTransport>) {
        let (inlet, receiver) = inbox();
        let client = MemoryTransport::new(usize::MAX);
        let outbox = Arc::new(Outbox::new(1 << 20, client.clone()));
        let timing = Timing {
            idle,
            rate_per_sec,
            burst,
        };
        let lines = UdpLines::new(receiver, &inlet, outbox, timing, "01234567".into(), b"");
        (inlet, lines, client)
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_string())
    }

    #[test]
    fn datagrams_become_lines_and_each_datagram_ends_its_last_line() {
        let (inlet, mut lines, _client) = lines_for(0, 1, Duration::from_secs(60));
        for datagram in [
            &b"alice\npw"[..],
            b"",
            b"hello\r\n",
            b"two\nlines\n",
            b"\xfe",
        ] {
            assert_eq!(inlet.deliver(datagram), Delivered::Queued);
        }
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(lines.next_line().expect("read").expect("a line"));
        }
        let expected = [
            text("alice"),
            text("pw"),
            text("hello"),
            text("two"),
            text("lines"),
            text("\u{FFFD}"),
        ];
        assert_eq!(got, expected);
        inlet.hang_up();
        assert_eq!(
            lines.next_line().expect("read"),
            None,
            "hung up: end of lines"
        );
    }

    #[test]
    fn the_code_again_before_any_other_line_gets_the_greeting_again() {
        let (inlet, mut lines, client) = lines_for(0, 1, Duration::from_secs(60));
        let _ = inlet.deliver(b"01234567\n 01234567\nalice\n01234567\n");
        assert_eq!(lines.next_line().expect("read"), Some(text("alice")));
        assert_eq!(
            lines.next_line().expect("read"),
            Some(text("01234567")),
            "after another line the code is just a line"
        );
        let greeting = Reply::Greeting.to_string();
        assert_eq!(client.lines(), [greeting.clone(), greeting]);
    }

    #[test]
    fn lines_over_the_rate_are_dropped_and_the_user_told_how_many() {
        let (inlet, mut lines, client) = lines_for(1, 3, Duration::from_secs(60));
        let _ = inlet.deliver(b"a\nb\nc\nd\ne\nf\ng\n");
        for expected in ["a", "b", "c"] {
            assert_eq!(lines.next_line().expect("read"), Some(text(expected)));
        }
        assert!(!lines.line_ready(), "the rest will be dropped");
        // The next read drops d..g and, before it waits for more, says so.
        lines.set_deadline(Some(Instant::now() + Duration::from_millis(50)));
        let timed_out = lines.next_line().expect_err("nothing more came");
        assert_eq!(timed_out.kind(), ErrorKind::TimedOut);
        assert_eq!(client.lines(), ["! Slow down: 4 lines were dropped."]);
    }

    #[test]
    fn drops_by_the_dispatcher_are_told_too_at_most_once_a_second() {
        let (inlet, mut lines, client) = lines_for(0, 1, Duration::from_secs(60));
        lines
            .reader
            .get_mut()
            .inbox
            .dropped_lines
            .store(5, Ordering::SeqCst);
        lines.set_deadline(Some(Instant::now() + Duration::from_millis(20)));
        let _ = lines.next_line();
        lines
            .reader
            .get_mut()
            .inbox
            .dropped_lines
            .store(1, Ordering::SeqCst);
        lines.set_deadline(Some(Instant::now() + Duration::from_millis(20)));
        let _ = lines.next_line();
        assert_eq!(
            client.lines(),
            ["! Slow down: 5 lines were dropped."],
            "the second notice waits its turn"
        );
        let started = Instant::now();
        lines.set_deadline(Some(started + Duration::from_secs(5)));
        let _ = inlet.deliver(b"x\n");
        assert_eq!(lines.next_line().expect("read"), Some(text("x")));
        lines.set_deadline(Some(
            Instant::now() + UDP_DROP_NOTICE_INTERVAL + Duration::from_millis(100),
        ));
        let _ = lines.next_line();
        assert_eq!(
            client.lines(),
            [
                "! Slow down: 5 lines were dropped.",
                "! Slow down: 1 line was dropped."
            ]
        );
    }

    #[test]
    fn silence_gets_a_warning_then_ends_the_lines() {
        let (_inlet, mut lines, client) = lines_for(0, 1, Duration::from_millis(200));
        let started = Instant::now();
        assert_eq!(lines.next_line().expect("read"), None);
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(lines.ended_idle());
        let said = client.lines();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].starts_with("* Still there?"), "{said:?}");
        assert!(said[1].contains("session is closed"), "{said:?}");
    }
}
