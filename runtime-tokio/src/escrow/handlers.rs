//! The HTTP surface: routes, body limits, authentication, and the mapping of
//! every outcome to a status and a JSON body.
//!
//! Contract: every answer is JSON (except `/metrics`); every refusal is
//! `{error, message, reasons}` with a 4xx for anything the caller got wrong
//! (malformed JSON, wrong types, oversized bodies, bad base64, wrong key
//! lengths, stale timestamps, replayed nonces, unknown clients) and never a
//! panic. `error` is a stable code (the original's strings where it had
//! them: `invalid-signature`, `escrow-record-not-found`,
//! `unlock-rejected:<reasons>`); `reasons` is the policy's list on a 412 and
//! `null` otherwise. 5xx answers carry no internal detail (it is logged).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::escrow::auth::{Action, Authenticated, Authenticator};
use crate::escrow::metrics::{EscrowMetrics, OPENMETRICS_CONTENT_TYPE, RouteLabels};
use crate::escrow::service::{EscrowService, ServiceError};
use crate::escrow::wire::{
    MAX_BODY_BYTES, RequestError, parse_deposit_request, parse_release_request,
    parse_renew_request, parse_revoke_request, parse_unlock_request,
};

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct App {
    /// The service.
    pub service: Arc<EscrowService>,
    /// Request authentication.
    pub auth: Arc<Authenticator>,
    /// Metrics.
    pub metrics: Arc<EscrowMetrics>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError(ServiceError);

impl<E: Into<ServiceError>> From<E> for ApiError {
    fn from(error: E) -> Self {
        ApiError(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let status = error.status();
        let message = if status.is_server_error() {
            tracing::warn!(%error, status = status.as_u16(), "escrow request failed");
            match status {
                StatusCode::SERVICE_UNAVAILABLE => error.to_string(),
                _ => "internal error (see the escrow's log)".to_owned(),
            }
        } else {
            tracing::debug!(%error, status = status.as_u16(), "escrow request refused");
            error.to_string()
        };
        let mut body = json!({
            "error": error.code(),
            "message": message,
            "reasons": error.reasons().map(|reasons| {
                reasons.iter().map(|reason| reason.as_str()).collect::<Vec<_>>()
            }),
        });
        if let ServiceError::Request(request) = &error {
            if let Some(field) = request.field() {
                body["field"] = Value::String(field.to_owned());
            }
        }
        (status, axum::Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// The router: the API under `base_path`, and metrics at `metrics_path` too.
pub fn router(app: App, base_path: &str, metrics_path: Option<&str>) -> Router {
    let at = |path: &str| format!("{base_path}{path}");
    let mut router = Router::new()
        .route(&at("/health"), get(health))
        .route(&at("/policy"), get(policy))
        .route(&at("/escrow"), post(deposit))
        .route(&at("/escrow/unlock"), post(unlock))
        .route(&at("/unlock"), post(unlock))
        .route(&at("/escrow/renew"), post(renew))
        .route(&at("/escrow/release"), post(release))
        .route(&at("/escrow/revoke"), post(revoke))
        .route(&at("/revoke"), post(revoke))
        .route(&at("/leases"), get(leases))
        // The original mounted the deposit at the base path itself.
        .route(&at("/"), post(deposit));
    if !base_path.is_empty() {
        router = router.route(base_path, post(deposit));
    }
    if let Some(path) = metrics_path {
        router = router.route(&at("/metrics"), get(metrics));
        if path != at("/metrics") {
            router = router.route(path, get(metrics));
        }
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Times every request by matched route and status.
async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics
        .http_duration
        .get_or_create(&RouteLabels {
            route,
            status: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"error": "not-found", "message": "no such route", "reasons": null}),
    )
}

async fn method_not_allowed() -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &json!({"error": "method-not-allowed", "message": "method not allowed", "reasons": null}),
    )
}

/// Reads the body (at most [`MAX_BODY_BYTES`]) and authenticates it for `action`.
async fn signed(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    action: Action,
) -> Result<(Authenticated, bytes::Bytes), ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ServiceError::Request(RequestError::TooLarge))?;
    let auth = app
        .auth
        .verify(headers, &bytes, crate::escrow::unix_now())?;
    auth.require(action)?;
    Ok((auth, bytes))
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    (status, axum::Json(value)).into_response()
}

async fn health(State(app): State<App>) -> Response {
    let policy = &app.service.policy;
    if app.service.audit_failed() {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "error": "audit-unavailable", "policy": policy}),
        );
    }
    json_response(StatusCode::OK, &json!({"status": "ok", "policy": policy}))
}

async fn policy(State(app): State<App>) -> Response {
    let policy = &app.service.policy;
    json_response(
        StatusCode::OK,
        &json!({
            "policy": policy,
            "publicKey": app.service.keys.public_key_base64(),
            "leaseTtlMs": hypergate_core::time::duration_millis(policy.lease_ttl),
            "depositTtlMs": hypergate_core::time::duration_millis(policy.max_deposit_ttl),
        }),
    )
}

async fn metrics(State(app): State<App>) -> Response {
    let mut response = app.metrics.encode().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
    );
    response
}

async fn deposit(State(app): State<App>, headers: HeaderMap, body: Body) -> ApiResult {
    let (auth, bytes) = signed(&app, &headers, body, Action::Deposit).await?;
    let request = parse_deposit_request(&bytes)?;
    let sealed = serde_json::to_value(&request.encrypted_package)
        .map_err(|error| ServiceError::Internal(error.to_string()))?;
    let answer = app
        .service
        .detached(move |service| service.deposit(auth, request, sealed))
        .await?;
    Ok(json_response(StatusCode::CREATED, &answer))
}

async fn unlock(State(app): State<App>, headers: HeaderMap, body: Body) -> ApiResult {
    let (auth, bytes) = signed(&app, &headers, body, Action::Unlock).await?;
    let request = parse_unlock_request(&bytes)?;
    let answer = app
        .service
        .detached(move |service| service.unlock(auth, request))
        .await?;
    Ok(json_response(StatusCode::OK, &answer))
}

async fn renew(State(app): State<App>, headers: HeaderMap, body: Body) -> ApiResult {
    let (auth, bytes) = signed(&app, &headers, body, Action::Renew).await?;
    let request = parse_renew_request(&bytes)?;
    let (lease, expires_at) = app
        .service
        .detached(move |service| service.renew(auth, request))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"leaseId": lease.to_string(), "expiresAt": expires_at.0}),
    ))
}

async fn release(State(app): State<App>, headers: HeaderMap, body: Body) -> ApiResult {
    let (auth, bytes) = signed(&app, &headers, body, Action::Release).await?;
    let request = parse_release_request(&bytes)?;
    let lease = request.lease_id.to_string();
    app.service
        .detached(move |service| service.release(auth, request))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"released": true, "leaseId": lease}),
    ))
}

async fn revoke(State(app): State<App>, headers: HeaderMap, body: Body) -> ApiResult {
    let (auth, bytes) = signed(&app, &headers, body, Action::Revoke).await?;
    let request = parse_revoke_request(&bytes)?;
    let (success, revoked) = app
        .service
        .detached(move |service| service.revoke(auth, request))
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"success": success, "revoked": revoked}),
    ))
}

async fn leases(State(app): State<App>, headers: HeaderMap, body: Body) -> ApiResult {
    let (_auth, _) = signed(&app, &headers, body, Action::ListLeases).await?;
    let leases = app.service.detached(EscrowService::leases).await?;
    Ok(json_response(StatusCode::OK, &json!({"leases": leases})))
}
