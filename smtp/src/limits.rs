//! Delivery limits per destination domain, per tenant and per source-IP pool, changeable
//! while mail flows.
//!
//! A [`Throttles`] value holds the table of limits and the live state behind them (how
//! many transactions each scope has open, when each scope may send next). The transport
//! asks it for an [`Admission`] before every transaction and holds it until the
//! transaction ends. [`Throttles::set`] replaces a limit at once: waiters are woken and
//! re-check against the new value, and a lowered concurrency limit stops new
//! transactions until enough running ones end.
//!
//! Rates use the generic cell rate algorithm: a scope allowed `n` messages per period
//! sends one every `period / n`, with bursts of up to `burst` messages after a quiet
//! spell. Each reservation is made under a lock, so the spacing holds under any
//! number of concurrent senders.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use tokio::sync::Notify;
use tokio::time::Instant;

pub use maily_engine::ports::Pace;
pub use maily_engine::rate::{Rate, RateParseError};

/// What a limit applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Mail to one recipient domain (lower case).
    Domain(String),
    /// Mail of one tenant.
    Tenant(String),
    /// Mail leaving through one source-IP pool.
    Pool(String),
}

impl Scope {
    /// A domain scope; the name is lower-cased and loses a trailing dot.
    pub fn domain(name: &str) -> Self {
        Scope::Domain(name.trim_end_matches('.').to_ascii_lowercase())
    }

    fn kind(&self) -> ScopeKind {
        match self {
            Scope::Domain(_) => ScopeKind::Domain,
            Scope::Tenant(_) => ScopeKind::Tenant,
            Scope::Pool(_) => ScopeKind::Pool,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Domain(d) => write!(f, "domain {d}"),
            Scope::Tenant(t) => write!(f, "tenant {t}"),
            Scope::Pool(p) => write!(f, "pool {p}"),
        }
    }
}

/// The kinds of scope, for defaults that apply to each scope of a kind separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeKind {
    Domain,
    Tenant,
    Pool,
}

/// The limits of one scope; `None` leaves that dimension unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limit {
    /// Transactions (and so connections) open at once.
    pub max_connections: Option<usize>,
    /// Transactions on one connection before it is closed (domain scopes only).
    pub max_messages_per_connection: Option<usize>,
    /// Messages started per period.
    pub rate: Option<Rate>,
    /// Messages that may start back to back after a quiet spell (at least 1).
    pub burst: Option<u32>,
}

/// Every configured limit: defaults per kind of scope, and limits of named scopes,
/// which replace the default of their kind entirely.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThrottleTable {
    pub defaults: BTreeMap<ScopeKind, Limit>,
    pub scopes: BTreeMap<Scope, Limit>,
}

impl ThrottleTable {
    /// Whether any limit sets a rate.
    fn has_rates(&self) -> bool {
        self.defaults
            .values()
            .chain(self.scopes.values())
            .any(|l| l.rate.is_some())
    }

    /// The limit in force for `scope`.
    pub fn limit_for(&self, scope: &Scope) -> Limit {
        self.scopes
            .get(scope)
            .or_else(|| self.defaults.get(&scope.kind()))
            .copied()
            .unwrap_or_default()
    }
}

/// Live state of one scope.
struct ScopeState {
    /// The concurrency limit in force; `usize::MAX` for none.
    max: AtomicUsize,
    open: Mutex<usize>,
    freed: Notify,
    rate: Mutex<Gcra>,
}

/// Generic cell rate algorithm state: the theoretical arrival time of the next message.
struct Gcra {
    tat: Option<Instant>,
}

impl ScopeState {
    fn new(limit: &Limit) -> Self {
        ScopeState {
            max: AtomicUsize::new(limit.max_connections.unwrap_or(usize::MAX)),
            open: Mutex::new(0),
            freed: Notify::new(),
            rate: Mutex::new(Gcra { tat: None }),
        }
    }

    async fn acquire(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            {
                let mut open = lock(&self.open);
                if *open < self.max.load(Ordering::Acquire).max(1) {
                    *open += 1;
                    return Slot(Arc::clone(self));
                }
            }
            freed.await;
        }
    }

    /// Reserves the next send time under `limit`'s rate; returns when to start.
    fn reserve(&self, limit: &Limit, now: Instant) -> Instant {
        let Some(rate) = limit.rate else {
            return now;
        };
        let interval = rate.interval();
        let tolerance = interval * limit.burst.unwrap_or(1).max(1).saturating_sub(1);
        let mut gcra = lock(&self.rate);
        let tat = gcra.tat.map_or(now, |t| t.max(now));
        // Earliest start such that tat - start <= tolerance.
        let start = tat.checked_sub(tolerance).map_or(now, |s| s.max(now));
        gcra.tat = Some(tat + interval);
        start
    }
}

/// One open transaction of one scope; frees its place when dropped.
struct Slot(Arc<ScopeState>);

impl Drop for Slot {
    fn drop(&mut self) {
        *lock(&self.0.open) -= 1;
        self.0.freed.notify_one();
    }
}

/// Places held by one transaction in every scope it belongs to.
pub struct Admission {
    _slots: Vec<Slot>,
    /// Transactions per connection allowed by the domain's limit.
    pub max_messages_per_connection: Option<usize>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("slots", &self._slots.len())
            .field(
                "max_messages_per_connection",
                &self.max_messages_per_connection,
            )
            .finish()
    }
}

/// Limits and their live state; share it in an `Arc` between the transport and
/// whatever changes limits at run time.
#[derive(Default)]
pub struct Throttles {
    table: RwLock<ThrottleTable>,
    states: Mutex<HashMap<Scope, Arc<ScopeState>>>,
    /// Whether any limit of the table sets a rate (else [`Throttles::pace`] is `None`
    /// without a look at the table).
    rates: std::sync::atomic::AtomicBool,
}

impl Throttles {
    /// Throttles enforcing `table`.
    pub fn new(table: ThrottleTable) -> Self {
        Throttles {
            rates: std::sync::atomic::AtomicBool::new(table.has_rates()),
            table: RwLock::new(table),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// The limits in force.
    pub fn table(&self) -> ThrottleTable {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the limit of one scope; it takes effect for the next transaction.
    pub fn set(&self, scope: Scope, limit: Limit) {
        self.write(|t| {
            t.scopes.insert(scope, limit);
        });
    }

    /// Removes a scope's own limit, so the default of its kind applies again.
    pub fn clear(&self, scope: &Scope) {
        self.write(|t| {
            t.scopes.remove(scope);
        });
    }

    /// Sets the default limit for every scope of `kind` without a limit of its own.
    pub fn set_default(&self, kind: ScopeKind, limit: Limit) {
        self.write(|t| {
            t.defaults.insert(kind, limit);
        });
    }

    /// Replaces the whole table.
    pub fn replace(&self, table: ThrottleTable) {
        self.write(|t| *t = table);
    }

    fn write(&self, change: impl FnOnce(&mut ThrottleTable)) {
        let table = {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            change(&mut table);
            table.clone()
        };
        self.rates.store(table.has_rates(), Ordering::Release);
        // Push the new concurrency limits into live state and wake every waiter to
        // re-check; a raised limit admits them at once.
        for (scope, state) in lock(&self.states).iter() {
            let max = table.limit_for(scope).max_connections.unwrap_or(usize::MAX);
            state.max.store(max, Ordering::Release);
            state.freed.notify_waiters();
        }
        metrics::counter!("maily_throttle_changes_total").increment(1);
    }

    fn state(&self, scope: &Scope, limit: &Limit) -> Arc<ScopeState> {
        let mut states = lock(&self.states);
        Arc::clone(
            states
                .entry(scope.clone())
                .or_insert_with(|| Arc::new(ScopeState::new(limit))),
        )
    }

    /// Waits until a transaction in all of `scopes` may start, and returns the places
    /// it holds. Scopes are taken in the order given; callers always pass domain,
    /// tenant, pool, so two transactions never wait on each other in a cycle.
    pub async fn admit(&self, scopes: &[Scope]) -> Admission {
        let mut slots = Vec::with_capacity(scopes.len());
        let mut per_connection = None;
        let mut start = Instant::now();
        let waited = Instant::now();
        for scope in scopes {
            let limit = self
                .table
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .limit_for(scope);
            if limit == Limit::default() {
                continue;
            }
            let state = self.state(scope, &limit);
            if limit.max_connections.is_some() {
                slots.push(state.acquire().await);
            }
            if let Scope::Domain(_) = scope {
                per_connection = limit.max_messages_per_connection;
            }
            start = start.max(state.reserve(&limit, Instant::now()));
        }
        tokio::time::sleep_until(start).await;
        let waited = waited.elapsed();
        if !waited.is_zero() {
            metrics::histogram!("maily_throttle_wait_seconds").record(waited.as_secs_f64());
        }
        Admission {
            _slots: slots,
            max_messages_per_connection: per_connection,
        }
    }

    /// Whether any limit in force sets a rate.
    pub fn any_rate(&self) -> bool {
        self.rates.load(Ordering::Acquire)
    }

    /// How the rates of `scopes` would hold a transaction back if it started now,
    /// without reserving anything: the longest wait, with the spacing of the limit
    /// that sets it; `None` when no scope has a rate.
    pub fn pace(&self, scopes: &[Scope]) -> Option<Pace> {
        if !self.any_rate() {
            return None;
        }
        let now = Instant::now();
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let mut pace: Option<Pace> = None;
        for scope in scopes {
            let limit = table.limit_for(scope);
            let Some(rate) = limit.rate else {
                continue;
            };
            let interval = rate.interval();
            let tolerance = interval * limit.burst.unwrap_or(1).max(1).saturating_sub(1);
            let state = lock(&self.states).get(scope).cloned();
            let wait = state
                .and_then(|state| lock(&state.rate).tat)
                .and_then(|tat| tat.checked_sub(tolerance))
                .map_or(std::time::Duration::ZERO, |start| {
                    start.saturating_duration_since(now)
                });
            if pace.is_none_or(|p| wait >= p.wait) {
                pace = Some(Pace {
                    wait,
                    spacing: interval,
                });
            }
        }
        pace
    }

    /// Transactions open right now in `scope`.
    pub fn open(&self, scope: &Scope) -> usize {
        lock(&self.states)
            .get(scope)
            .map_or(0, |state| *lock(&state.open))
    }
}

impl fmt::Debug for Throttles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttles")
            .field("table", &self.table())
            .finish_non_exhaustive()
    }
}

/// The guarded data is plain counters; a poisoned lock carries no meaning.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limit(conns: Option<usize>, rate: Option<&str>) -> Limit {
        Limit {
            max_connections: conns,
            rate: rate.map(|r| r.parse().unwrap()),
            ..Limit::default()
        }
    }

    #[test]
    fn rates_parse_and_name_bad_input() {
        assert_eq!(
            "50/s".parse::<Rate>().unwrap(),
            Rate {
                messages: 50,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(
            "3000/m".parse::<Rate>().unwrap().interval(),
            Duration::from_millis(20)
        );
        assert_eq!("10/h".parse::<Rate>().unwrap().to_string(), "10/h");
        for bad in ["", "5", "0/s", "x/s", "5/d", "-1/s"] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn named_scopes_replace_the_default_of_their_kind() {
        let mut table = ThrottleTable::default();
        table
            .defaults
            .insert(ScopeKind::Domain, limit(Some(4), None));
        table
            .scopes
            .insert(Scope::domain("Slow.Example."), limit(None, Some("1/s")));
        assert_eq!(
            table.limit_for(&Scope::domain("other.org")).max_connections,
            Some(4)
        );
        let slow = table.limit_for(&Scope::domain("slow.example"));
        assert_eq!(slow.max_connections, None);
        assert!(slow.rate.is_some());
        assert_eq!(
            table.limit_for(&Scope::Tenant("t".into())),
            Limit::default()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_spaces_messages_evenly_after_the_burst() {
        let throttles = Throttles::new(ThrottleTable::default());
        throttles.set(
            Scope::domain("a.org"),
            Limit {
                rate: Some("10/s".parse().unwrap()),
                burst: Some(3),
                ..Limit::default()
            },
        );
        let t0 = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..6 {
            throttles.admit(&[Scope::domain("a.org")]).await;
            starts.push(t0.elapsed().as_millis());
        }
        assert_eq!(starts, [0, 0, 0, 100, 200, 300]);
    }

    #[tokio::test(start_paused = true)]
    async fn pace_tells_the_wait_without_taking_a_place() {
        let throttles = Throttles::new(ThrottleTable::default());
        let scopes = [Scope::domain("a.org"), Scope::Tenant("t".into())];
        assert_eq!(throttles.pace(&scopes), None, "no rate, no pace");
        throttles.set(
            Scope::domain("a.org"),
            Limit {
                rate: Some("10/s".parse().unwrap()),
                burst: Some(2),
                ..Limit::default()
            },
        );
        let pace = |wait_ms| {
            Some(Pace {
                wait: Duration::from_millis(wait_ms),
                spacing: Duration::from_millis(100),
            })
        };
        assert_eq!(throttles.pace(&scopes), pace(0));
        // Asking reserves nothing: the burst is still there.
        assert_eq!(throttles.pace(&scopes), pace(0));
        throttles.admit(&scopes).await;
        assert_eq!(throttles.pace(&scopes), pace(0), "one of the burst left");
        throttles.admit(&scopes).await;
        assert_eq!(throttles.pace(&scopes), pace(100));
        throttles.admit(&scopes).await;
        assert_eq!(throttles.pace(&scopes), pace(100));
        // A slower tenant rate binds instead.
        throttles.set(
            Scope::Tenant("t".into()),
            Limit {
                rate: Some("1/s".parse().unwrap()),
                ..Limit::default()
            },
        );
        throttles.admit(&scopes).await;
        throttles.admit(&scopes).await;
        let p = throttles.pace(&scopes).unwrap();
        assert_eq!(p.spacing, Duration::from_secs(1));
        assert!(p.wait > Duration::from_millis(900), "{p:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_and_a_raised_limit_admits_waiters_at_once() {
        let throttles = Arc::new(Throttles::new(ThrottleTable::default()));
        let scope = Scope::domain("b.org");
        throttles.set(scope.clone(), limit(Some(1), None));
        let first = throttles.admit(std::slice::from_ref(&scope)).await;
        let waiter = {
            let (throttles, scope) = (Arc::clone(&throttles), scope.clone());
            tokio::spawn(async move { throttles.admit(&[scope]).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "the second transaction waits");
        assert_eq!(throttles.open(&scope), 1);
        throttles.set(scope.clone(), limit(Some(2), None));
        let second = tokio::time::timeout(Duration::from_millis(10), waiter)
            .await
            .expect("raising the limit admits the waiter")
            .unwrap();
        assert_eq!(throttles.open(&scope), 2);
        drop((first, second));
        assert_eq!(throttles.open(&scope), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lowered_limit_holds_back_new_transactions_until_enough_end() {
        let throttles = Arc::new(Throttles::new(ThrottleTable::default()));
        let scope = Scope::Tenant("acme".into());
        throttles.set(scope.clone(), limit(Some(3), None));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(throttles.admit(std::slice::from_ref(&scope)).await);
        }
        throttles.set(scope.clone(), limit(Some(1), None));
        let waiter = {
            let (throttles, scope) = (Arc::clone(&throttles), scope.clone());
            tokio::spawn(async move { throttles.admit(&[scope]).await })
        };
        held.pop();
        held.pop();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !waiter.is_finished(),
            "one still open: the limit of 1 is reached"
        );
        held.pop();
        tokio::time::timeout(Duration::from_millis(10), waiter)
            .await
            .expect("admitted once the last one ended")
            .unwrap();
    }
}
