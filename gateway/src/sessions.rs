//! Every open client connection, with a way to close it from outside:
//! when a CRL revokes its certificate or an admin locks its user, the
//! connection and any exec or attach stream it carries end within the
//! reload interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::tls::Caller;

#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
}

struct Entry {
    session: Arc<Session>,
    close: watch::Sender<bool>,
}

/// One connection's caller and where it came from.
pub struct Session {
    pub id: u64,
    /// The certificate's caller; `None` for a connection without a
    /// certificate (allowed only with bearer tokens configured), whose
    /// every request names its caller in a bearer token.
    pub caller: Option<Caller>,
    pub source: String,
}

/// Held by the connection's task; dropping it unregisters the session.
pub struct Registration {
    sessions: Sessions,
    pub session: Arc<Session>,
    pub closed: watch::Receiver<bool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.sessions.inner.open.lock().expect("sessions lock");
        open.remove(&self.session.id);
    }
}

impl Sessions {
    pub fn register(&self, caller: Option<Caller>, source: String) -> Registration {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(false);
        let session = Arc::new(Session { id, caller, source });
        self.inner.open.lock().expect("sessions lock").insert(
            id,
            Entry {
                session: session.clone(),
                close,
            },
        );
        Registration {
            sessions: self.clone(),
            session,
            closed,
        }
    }

    /// Closes every session `which` selects; returns how many.
    pub fn close_where(&self, which: impl Fn(&Session) -> bool) -> usize {
        let open = self.inner.open.lock().expect("sessions lock");
        let mut closed = 0;
        for entry in open.values() {
            if which(&entry.session) {
                let _ = entry.close.send(true);
                closed += 1;
            }
        }
        closed
    }

    pub fn count(&self) -> usize {
        self.inner.open.lock().expect("sessions lock").len()
    }
}

/// Resolves when `closed` says the session was closed from outside.
pub async fn closed(mut closed: watch::Receiver<bool>) {
    while !*closed.borrow_and_update() {
        if closed.changed().await.is_err() {
            // The registry dropped the sender: the session is gone.
            return;
        }
    }
}
