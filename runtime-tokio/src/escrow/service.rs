//! The escrow service's state: the core [`Escrow`], the store, the audit log
//! and the lease vault, and the rules that keep them in step.
//!
//! Contract:
//! - **One async mutex serialises every change.** Each operation locks the
//!   state, lets the core decide, appends the audit record (durable), writes
//!   the store (on a blocking thread), and only then answers. The audit log
//!   is a hash chain and the store's writers are serialised anyway (one redb
//!   writer, a PostgreSQL advisory lock), so a lock costs no parallelism that
//!   exists; an actor task would serialise the same way with more code.
//! - **Operations outlive their request.** Handlers run each operation on a
//!   spawned task ([`EscrowService::detached`]): a client hanging up cannot
//!   cut an operation between its audit append and its store write.
//! - **Fail closed.** An audit append that fails is answered 503, nothing is
//!   released, and the audit log refuses every later append until the
//!   service restarts ([`AuditError::Poisoned`](hypergate_adapters::audit::AuditError)).
//!   After any failure past the core's decision, the core is rebuilt from the
//!   store (the durable truth) so memory never runs ahead of disk.
//! - **Expiry at TTL**: [`EscrowService::expire_due`] runs the core's timer
//!   and records what ended; the sweep task calls it at each deadline and
//!   every operation calls it first (the check at every lookup).
//! - The store is blocking (`postgres` runs its own runtime): every call goes
//!   through `spawn_blocking`, and the store is dropped on a plain thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::http::StatusCode;
use hypergate_adapters::audit::{AuditAppended, AuditEvent, AuditLog};
use hypergate_adapters::crypto::{BoxKeyPair, LeaseVault};
use hypergate_adapters::escrow_store::{
    AuditIndexEntry, EscrowStore, EscrowStoreError, Revocation, StoredDeposit, WriteOutcome,
};
use hypergate_core::escrow::{
    AuditKind, AuditRecord, Escrow, EscrowError, EscrowEvent, PolicyConfig, RejectReason,
};
use hypergate_core::ids::PeerId;
use hypergate_core::lease::{LeaseConfig, LeaseId};
use hypergate_core::time::UnixTime;
use tokio::sync::{Mutex, MutexGuard, Notify};

use crate::escrow::auth::AuthError;
use crate::escrow::metrics::{EscrowMetrics, OperationLabel};
use crate::escrow::wire::RequestError;

/// Why an operation failed, grouped by blame; [`ServiceError::status`] maps
/// each to its HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    // The caller's fault (4xx).
    /// The body is malformed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The request is not authenticated or not allowed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The deposit does not validate (code, message).
    #[error("{1}")]
    InvalidDeposit(&'static str, String),
    /// The requester id is missing, or not the client's bound peer.
    #[error("{1}")]
    Requester(&'static str, String),
    /// The core refused the input.
    #[error(transparent)]
    Escrow(#[from] EscrowError),
    // The policy's refusal (412).
    /// The unlock or renewal was refused for these reasons.
    #[error("unlock-rejected")]
    Rejected(Vec<RejectReason>),
    // Local failures (5xx): nothing was released.
    /// The audit log cannot be written: fail closed.
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(String),
    /// The store is unreachable or failing.
    #[error("escrow store unavailable: {0}")]
    StoreUnavailable(String),
    /// A state that should be impossible (a store refusal of a core-made change, a deposit
    /// that no longer opens).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            ServiceError::Request(RequestError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::Request(_) | ServiceError::InvalidDeposit(..) => StatusCode::BAD_REQUEST,
            ServiceError::Auth(error) => error.status(),
            ServiceError::Requester(code, _) if *code == "requester-required" => {
                StatusCode::BAD_REQUEST
            }
            ServiceError::Requester(..) => StatusCode::FORBIDDEN,
            ServiceError::Escrow(error) => match error {
                EscrowError::Rejected(_) => StatusCode::PRECONDITION_FAILED,
                EscrowError::NotLeaseHolder { .. } => StatusCode::FORBIDDEN,
                EscrowError::DuplicateEscrowId(_)
                | EscrowError::StalePlan
                | EscrowError::Lease(_) => StatusCode::CONFLICT,
                EscrowError::SnapshotVersion { .. } | EscrowError::SnapshotInconsistent(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                _ => StatusCode::BAD_REQUEST,
            },
            ServiceError::Rejected(_) => StatusCode::PRECONDITION_FAILED,
            ServiceError::AuditUnavailable(_) | ServiceError::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `{error}` code (for a refusal, the original's `unlock-rejected:<reasons>`).
    #[must_use]
    pub fn code(&self) -> String {
        match self {
            ServiceError::Request(error) => error.code().to_owned(),
            ServiceError::Auth(error) => error.code().to_owned(),
            ServiceError::InvalidDeposit(code, _) | ServiceError::Requester(code, _) => {
                (*code).to_owned()
            }
            ServiceError::Escrow(EscrowError::Rejected(reasons))
            | ServiceError::Rejected(reasons) => rejected_code(reasons),
            ServiceError::Escrow(error) => error.code().to_owned(),
            ServiceError::AuditUnavailable(_) => "audit-unavailable".to_owned(),
            ServiceError::StoreUnavailable(_) => "store-unavailable".to_owned(),
            ServiceError::Internal(_) => "internal-error".to_owned(),
        }
    }

    /// The reasons of a policy refusal.
    #[must_use]
    pub fn reasons(&self) -> Option<&[RejectReason]> {
        match self {
            ServiceError::Rejected(reasons)
            | ServiceError::Escrow(EscrowError::Rejected(reasons)) => Some(reasons),
            _ => None,
        }
    }

    /// Whether the core may have run ahead of the store (rebuild it).
    fn needs_recovery(&self) -> bool {
        matches!(
            self,
            ServiceError::AuditUnavailable(_)
                | ServiceError::StoreUnavailable(_)
                | ServiceError::Internal(_)
        )
    }
}

/// The original's refusal string: `unlock-rejected:<r1>,<r2>…`.
#[must_use]
pub fn rejected_code(reasons: &[RejectReason]) -> String {
    let list: Vec<&str> = reasons.iter().map(|reason| reason.as_str()).collect();
    format!("unlock-rejected:{}", list.join(","))
}

fn store_error(error: EscrowStoreError) -> ServiceError {
    if error.is_caller_error() {
        // The core made this change: a refusal means core and store disagree.
        ServiceError::Internal(format!("store refused a change: {error}"))
    } else {
        ServiceError::StoreUnavailable(error.to_string())
    }
}

/// The store, dropped on a plain thread: the `postgres` client owns a
/// runtime that must not be dropped inside tokio.
pub(crate) struct StoreHandle(Option<Arc<dyn EscrowStore>>);

impl StoreHandle {
    pub(crate) fn new(store: Arc<dyn EscrowStore>) -> Self {
        Self(Some(store))
    }

    fn get(&self) -> Option<Arc<dyn EscrowStore>> {
        self.0.clone()
    }
}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        if let Some(store) = self.0.take() {
            let _ = std::thread::spawn(move || drop(store)).join();
        }
    }
}

/// What the state lock guards.
pub(crate) struct State {
    pub(crate) escrow: Escrow,
    audit: AuditLog,
    /// The last rebuild failed: try again before the next operation.
    needs_rebuild: bool,
}

/// What an input's audit records need to be written to the store.
#[derive(Default)]
pub(crate) struct Pending {
    /// The deposit a `deposit` record stores.
    pub(crate) deposit: Option<StoredDeposit>,
    /// The new expiry a `lease-renewed` record stores.
    pub(crate) renewed: Option<UnixTime>,
    /// An owner revoke: its `deposit-revoked` records are written together.
    pub(crate) owner_revoke: Option<PeerId>,
    /// The package digest to put in the audit entry of a deposit.
    pub(crate) payload_digest: Option<String>,
}

/// The escrow service: state, keys, policy and metrics.
pub struct EscrowService {
    state: Mutex<State>,
    store: StoreHandle,
    pub(crate) keys: BoxKeyPair,
    pub(crate) policy: PolicyConfig,
    lease_config: LeaseConfig,
    pub(crate) vault: LeaseVault,
    pub(crate) metrics: Arc<EscrowMetrics>,
    /// Woken after every change, so the sweep re-reads the next deadline.
    pub(crate) changed: Notify,
    audit_failed: AtomicBool,
}

impl std::fmt::Debug for EscrowService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EscrowService")
            .field("keys", &self.keys)
            .field("policy", &self.policy)
            .field("vault", &self.vault)
            .finish_non_exhaustive()
    }
}

impl EscrowService {
    /// Rebuilds the core from the store's snapshot, checks that the audit log
    /// belongs to the store, and records the leases that expired while the
    /// service was down.
    pub(crate) async fn start(
        store: Arc<dyn EscrowStore>,
        audit: AuditLog,
        keys: BoxKeyPair,
        policy: PolicyConfig,
        metrics: Arc<EscrowMetrics>,
    ) -> Result<Arc<Self>, ServiceError> {
        let lease_config = LeaseConfig::default();
        let store = StoreHandle::new(store);
        let probe = store.get();
        let (snapshot, last_seq) = tokio::task::spawn_blocking(move || {
            let store = probe.ok_or_else(|| ServiceError::Internal("no store".into()))?;
            Ok::<_, ServiceError>((
                store.escrow_snapshot().map_err(store_error)?,
                store.last_audit_seq().map_err(store_error)?,
            ))
        })
        .await
        .map_err(|error| ServiceError::Internal(error.to_string()))??;
        if let Some(last) = last_seq {
            if last >= audit.len() {
                return Err(ServiceError::Internal(format!(
                    "the audit log in {} holds {} entries but the store indexes entry {last}: \
                     this audit log does not belong to this store",
                    audit.dir().display(),
                    audit.len()
                )));
            }
        }
        let now = Instant::now();
        let unix_now = crate::escrow::unix_now();
        let escrow = Escrow::restore(policy.clone(), lease_config, snapshot, now, unix_now)?;
        let service = Arc::new(Self {
            state: Mutex::new(State {
                escrow,
                audit,
                needs_rebuild: false,
            }),
            store,
            keys,
            policy,
            lease_config,
            vault: LeaseVault::new(),
            metrics,
            changed: Notify::new(),
            audit_failed: AtomicBool::new(false),
        });
        {
            let mut state = service.state.lock().await;
            service.apply_events(&mut state, Pending::default()).await?;
            service.refresh_gauge(&state, now);
        }
        Ok(service)
    }

    /// Whether the audit log failed (the service refuses changes until restarted).
    #[must_use]
    pub fn audit_failed(&self) -> bool {
        self.audit_failed.load(Ordering::Relaxed)
    }

    /// Runs `operation` on its own task, so a client that hangs up cannot
    /// cancel it half-way.
    pub async fn detached<T, F>(
        self: &Arc<Self>,
        operation: impl FnOnce(Arc<Self>) -> F,
    ) -> Result<T, ServiceError>
    where
        F: Future<Output = Result<T, ServiceError>> + Send + 'static,
        T: Send + 'static,
    {
        tokio::spawn(operation(self.clone()))
            .await
            .map_err(|error| ServiceError::Internal(format!("operation task failed: {error}")))?
    }

    /// Locks the state, rebuilding the core first if a rebuild is owed and
    /// expiring what is due (the check at every lookup).
    pub(crate) async fn lock(&self, now: Instant) -> Result<MutexGuard<'_, State>, ServiceError> {
        let mut state = self.state.lock().await;
        if state.needs_rebuild {
            self.rebuild(&mut state).await?;
        }
        state.escrow.handle_timeout(now);
        let result = self.apply_events(&mut state, Pending::default()).await;
        self.settle(&mut state, now, result).await?;
        Ok(state)
    }

    /// Ends the leases whose TTL passed and records them; the sweep's step.
    pub async fn expire_due(&self) -> Result<(), ServiceError> {
        let now = Instant::now();
        let _state = self.lock(now).await?;
        Ok(())
    }

    /// The next lease deadline.
    pub(crate) async fn next_deadline(&self) -> Option<Instant> {
        self.state
            .lock()
            .await
            .escrow
            .poll_timeout()
            .map(|(deadline, _)| deadline)
    }

    /// After an operation: on a failure that may have left the core ahead of
    /// the store, rebuild it; refresh the gauge; wake the sweep.
    pub(crate) async fn settle<T>(
        &self,
        state: &mut State,
        now: Instant,
        result: Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        if let Err(error) = &result {
            if error.needs_recovery() {
                tracing::warn!(%error, "escrow operation failed after the core decided; rebuilding the core from the store");
                if let Err(rebuild) = self.rebuild(state).await {
                    tracing::error!(error = %rebuild, "rebuilding the escrow core from the store failed; will retry");
                }
            }
        }
        self.refresh_gauge(state, now);
        self.changed.notify_one();
        result
    }

    fn refresh_gauge(&self, state: &State, now: Instant) {
        let active = state.escrow.active_leases(now).count();
        self.metrics
            .active_leases
            .set(i64::try_from(active).unwrap_or(i64::MAX));
    }

    async fn rebuild(&self, state: &mut State) -> Result<(), ServiceError> {
        state.needs_rebuild = true;
        let snapshot = self
            .store_call("escrow_snapshot", |store| store.escrow_snapshot())
            .await?;
        let now = Instant::now();
        let escrow = Escrow::restore(
            self.policy.clone(),
            self.lease_config,
            snapshot,
            now,
            crate::escrow::unix_now(),
        )?;
        state.escrow = escrow;
        state.needs_rebuild = false;
        // Keys of leases the durable state does not hold are wiped.
        for lease in self.vault.leases() {
            let active = state.escrow.active_lease(&lease.relay, now).map(|l| l.id);
            if active != Some(lease) {
                self.vault.wipe(&lease);
            }
        }
        Ok(())
    }

    /// Runs a store call on the blocking pool, timed.
    pub(crate) async fn store_call<T: Send + 'static>(
        &self,
        operation: &'static str,
        call: impl FnOnce(&dyn EscrowStore) -> Result<T, EscrowStoreError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let store = self
            .store
            .get()
            .ok_or_else(|| ServiceError::Internal("store closed".into()))?;
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || call(&*store))
            .await
            .map_err(|error| ServiceError::Internal(format!("store task failed: {error}")))?;
        self.metrics
            .store_duration
            .get_or_create(&OperationLabel { operation })
            .observe(started.elapsed().as_secs_f64());
        result.map_err(store_error)
    }

    /// Runs a store write; a write found already applied (a retried commit)
    /// is as good as applied.
    pub(crate) async fn store_write(
        &self,
        operation: &'static str,
        call: impl FnOnce(&dyn EscrowStore) -> Result<WriteOutcome, EscrowStoreError> + Send + 'static,
    ) -> Result<(), ServiceError> {
        if self.store_call(operation, call).await? == WriteOutcome::AlreadyApplied {
            tracing::debug!(operation, "escrow store write was already applied");
        }
        Ok(())
    }

    /// Appends an audit event; durable when it returns. A failure fails closed.
    pub(crate) async fn append(
        &self,
        state: &mut State,
        event: &AuditEvent,
    ) -> Result<AuditAppended, ServiceError> {
        let started = Instant::now();
        let result = state.audit.append_event(event).await;
        self.metrics
            .audit_duration
            .observe(started.elapsed().as_secs_f64());
        result.map_err(|error| {
            self.metrics.audit_failures.inc();
            self.audit_failed.store(true, Ordering::Relaxed);
            tracing::error!(%error, kind = event.kind.as_str(), "audit append failed: refusing (fail closed)");
            ServiceError::AuditUnavailable(error.to_string())
        })
    }

    /// Appends a core record and returns its store index entry.
    pub(crate) async fn append_record(
        &self,
        state: &mut State,
        record: &AuditRecord,
        payload_digest: Option<&str>,
    ) -> Result<AuditIndexEntry, ServiceError> {
        let mut event = AuditEvent::from(record);
        if let Some(digest) = payload_digest {
            event = event.with_payload_digest(digest);
        }
        let appended = self.append(state, &event).await?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(&appended.digest, &mut digest)
            .map_err(|_| ServiceError::Internal("audit digest is not hex".into()))?;
        Ok(AuditIndexEntry::from_record(appended.seq, record, digest))
    }

    /// Drains the core's events: appends each audit record, writes its
    /// change to the store, wipes the vault for ended leases.
    pub(crate) async fn apply_events(
        &self,
        state: &mut State,
        mut pending: Pending,
    ) -> Result<(), ServiceError> {
        let mut owner_entries = Vec::new();
        let mut owner_revocation = None;
        let events: Vec<EscrowEvent> = std::iter::from_fn(|| state.escrow.poll_event()).collect();
        // Keys go first: wiping depends on no I/O succeeding.
        for event in &events {
            if let EscrowEvent::LeaseEnded { id, reason } = event {
                if self.vault.wipe(id) {
                    tracing::debug!(lease = %id, reason = reason.as_str(), "lease ended: key wiped");
                }
            }
        }
        for event in events {
            let EscrowEvent::Audit(record) = event else {
                continue;
            };
            let digest = match record.kind {
                AuditKind::Deposit => pending.payload_digest.clone(),
                _ => None,
            };
            let entry = self
                .append_record(state, &record, digest.as_deref())
                .await?;
            self.write_record(
                &record,
                entry,
                &mut pending,
                &mut owner_entries,
                &mut owner_revocation,
            )
            .await?;
        }
        if let (Some(owner), Some(revocation)) = (pending.owner_revoke, owner_revocation) {
            if !owner_entries.is_empty() {
                self.store_write("revoke_owner", move |store| {
                    store.revoke_owner(&owner, &revocation, &owner_entries)
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn write_record(
        &self,
        record: &AuditRecord,
        entry: AuditIndexEntry,
        pending: &mut Pending,
        owner_entries: &mut Vec<AuditIndexEntry>,
        owner_revocation: &mut Option<Revocation>,
    ) -> Result<(), ServiceError> {
        let lease = |record: &AuditRecord| -> Result<LeaseId, ServiceError> {
            record.lease_id.ok_or_else(|| {
                ServiceError::Internal(format!("{} record without lease", record.kind.as_str()))
            })
        };
        match record.kind {
            AuditKind::Deposit => {
                let deposit = pending.deposit.take().ok_or_else(|| {
                    ServiceError::Internal("deposit record without deposit".into())
                })?;
                self.store_write("put_deposit", move |store| {
                    store.put_deposit(&deposit, &entry)
                })
                .await?;
            }
            AuditKind::DepositRevoked => {
                let revocation = Revocation {
                    at: record.at,
                    actor: record.actor.clone(),
                    reason: record.reason.clone().unwrap_or_default(),
                };
                if pending.owner_revoke.is_some() {
                    owner_entries.push(entry);
                    *owner_revocation = Some(revocation);
                } else {
                    let escrow_id = record.escrow_id.clone();
                    self.store_write("revoke_deposit", move |store| {
                        store.revoke_deposit(&escrow_id, &revocation, &entry)
                    })
                    .await?;
                }
            }
            AuditKind::LeaseExpired | AuditKind::LeaseReleased => {
                let id = lease(record)?;
                let (at, reason) = (record.at, record.reason.clone().unwrap_or_default());
                self.store_write("record_lease_ended", move |store| {
                    store.record_lease_ended(id, at, &reason, &entry)
                })
                .await?;
            }
            AuditKind::LeaseRenewed => {
                let id = lease(record)?;
                let expires_at = pending.renewed.take().ok_or_else(|| {
                    ServiceError::Internal("renewal record without expiry".into())
                })?;
                self.store_write("record_lease_renewed", move |store| {
                    store.record_lease_renewed(id, expires_at, &entry)
                })
                .await?;
            }
            AuditKind::UnlockRejected | AuditKind::UnlockRefetched => {
                self.store_write("append_audit_index", move |store| {
                    store.append_audit_index(&entry)
                })
                .await?;
            }
            // `unlock-issued` comes from a plan, never as an event; a kind
            // added to the core later is indexed without a change.
            _ => {
                self.store_write("append_audit_index", move |store| {
                    store.append_audit_index(&entry)
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The leases whose keys the vault holds now (ids only).
    #[must_use]
    pub fn held_leases(&self) -> Vec<LeaseId> {
        self.vault.leases()
    }

    /// Wipes every held key (shutdown).
    pub fn wipe_vault(&self) -> usize {
        self.vault.wipe_all()
    }
}
