//! Subscriptions over WebSocket on `/graphql` (`Sec-WebSocket-Protocol:
//! graphql-transport-ws`, or the legacy `graphql-ws`): actix-ws carries the frames and
//! async-graphql's protocol engine speaks GraphQL over them. The client authenticates
//! in `connection_init`: `{"Authorization": "Bearer <token>"}` (any case of the key, or
//! `authToken`). Without a token it subscribes anonymously; a bad token closes the
//! connection (4403).
//!
//! A socket is held to the same rules as HTTP, for as long as it is open:
//! - only subscriptions run on it (queries and mutations go over HTTP, where
//!   idempotency, CSRF and the consistency wait apply), and the trusted-documents
//!   policy resolves every document it subscribes with; the schema's limits and the
//!   caller's cost budget apply to each subscribe as to a request;
//! - connections are capped per client network and per account, subscriptions per
//!   connection (`TILL_WS_MAX_PER_IP`, `TILL_WS_MAX_PER_ACCOUNT`,
//!   `TILL_WS_MAX_SUBSCRIPTIONS`);
//! - the socket closes with 4401 when its token expires, its session ends (logout) or
//!   its account's role changes, so it never outlives what its token allowed.
//!
//! Why over 400 lines: the WebSocket connection's life cycle (upgrade, caps, init and
//! auth, re-checks, close) reads best in one file.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::AggregatedMessage;
use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage};
use async_graphql::parser::types::OperationType;
use async_graphql::Data;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::clients::Slot;
use crate::auth::access::Change;
use crate::auth::{Authenticated, Principal};
use crate::graphql::error::{self, Code};
use crate::graphql::RequestInfo;
use crate::http::state::AppData;

/// Largest client message (a subscribe with its document).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Close codes (the graphql-transport-ws range).
const UNAUTHORIZED: u16 = 4401;
const FORBIDDEN: u16 = 4403;
const TOO_MANY: u16 = 4429;

fn token_of(payload: &Value) -> Option<String> {
    let map = payload.as_object()?;
    map.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization") || k.as_str() == "authToken")
        .and_then(|(_, v)| v.as_str())
        .map(|t| {
            if t.starts_with("Bearer ") || t.starts_with("bearer ") {
                t.to_owned()
            } else {
                format!("Bearer {t}")
            }
        })
}

/// Who the socket acts for, once `connection_init` authenticated it.
struct Identity {
    caller: Authenticated,
    _account_slot: Option<Slot>,
}

/// What the reader side knows that the writer side acts on.
#[derive(Default)]
struct Shared {
    identity: Option<Identity>,
    /// Subscriptions running, by the client's operation id.
    active: HashSet<String>,
}

type State = Arc<Mutex<Shared>>;

fn lock(state: &State) -> std::sync::MutexGuard<'_, Shared> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `GET /graphql` with `Upgrade: websocket`.
pub async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    data: web::Data<Arc<AppData>>,
) -> actix_web::Result<HttpResponse> {
    let chosen = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|list| {
            list.split(',')
                .map(str::trim)
                .find(|p| WebSocketProtocols::from_str(p).is_ok())
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            actix_web::error::ErrorBadRequest(
                "Sec-WebSocket-Protocol must offer graphql-transport-ws or graphql-ws",
            )
        })?;
    let protocol = WebSocketProtocols::from_str(&chosen)
        .map_err(|_| actix_web::error::ErrorBadRequest("unknown WebSocket protocol"))?;
    let app = data.get_ref().clone();
    let client_ip = super::clients::client_ip(&req, &app.trusted_proxies);
    let ip_slot = match client_ip {
        Some(ip) => match app.connections.enter_ip(ip) {
            Some(slot) => Some(slot),
            None => {
                metrics::counter!("till_ws_refused_total", "reason" => "ip").increment(1);
                return Ok(HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", "10"))
                    .json(json!({ "error": "too many WebSocket connections from this address" })));
            }
        },
        None => None,
    };
    let (mut response, session, messages) = actix_ws::handle(&req, body)?;
    if let Ok(v) = HeaderValue::from_str(&chosen) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("sec-websocket-protocol"), v);
    }
    let legacy = matches!(protocol, WebSocketProtocols::SubscriptionsTransportWS);
    let state: State = Arc::default();
    // Set once the identity is known (the writer then watches its expiry and changes).
    let (known_tx, known_rx) = watch::channel(false);

    // Client frames -> the gate -> the protocol engine; pings answered here.
    let (to_engine, from_client) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let mut side = session.clone();
    let mut messages = messages
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    let gate_app = app.clone();
    let gate_state = state.clone();
    actix_web::rt::spawn(async move {
        let _ip_slot = ip_slot;
        while let Some(Ok(msg)) = messages.next().await {
            let frame = match msg {
                AggregatedMessage::Text(t) => t.as_bytes().to_vec(),
                AggregatedMessage::Binary(b) => b.to_vec(),
                AggregatedMessage::Ping(p) => {
                    if side.pong(&p).await.is_err() {
                        break;
                    }
                    continue;
                }
                AggregatedMessage::Pong(_) => continue,
                AggregatedMessage::Close(_) => break,
            };
            match gate(&gate_app, &gate_state, legacy, frame).await {
                Verdict::Forward(frame) => {
                    if lock(&gate_state).identity.is_some() {
                        let _ = known_tx.send(true);
                    }
                    if to_engine.send(frame).await.is_err() {
                        break;
                    }
                }
                Verdict::Answer(text) => {
                    if side.text(text).await.is_err() {
                        break;
                    }
                }
                Verdict::Close(code, reason) => {
                    let _ = side.clone().close(Some(close_reason(code, reason))).await;
                    break;
                }
            }
        }
    });

    let client = Box::pin(futures_util::stream::unfold(
        from_client,
        |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
    ));
    let init_state = state.clone();
    let engine = WebSocket::new(app.graphql.schema.clone(), client, protocol).on_connection_init(
        move |_payload: Value| async move {
            // The gate authenticated the caller before it let the frame through.
            let principal = lock(&init_state)
                .identity
                .as_ref()
                .map(|i| i.caller.principal)
                .ok_or_else(|| error::coded(Code::Unauthenticated, "not authenticated"))?;
            let mut data = Data::default();
            data.insert(RequestInfo {
                principal,
                request_id: uuid::Uuid::now_v7(),
                idempotency: None,
                client_ip,
                reads: None,
            });
            Ok(data)
        },
    );
    // The protocol engine -> client frames, while watching the identity's validity.
    let mut out = session;
    let mut changes = app.auth.access().map(|a| a.changes());
    let mut known_rx = known_rx;
    actix_web::rt::spawn(async move {
        let mut engine = std::pin::pin!(engine);
        loop {
            let expires_in = lock(&state)
                .identity
                .as_ref()
                .and_then(|i| i.caller.valid_until)
                .map(|until| {
                    let now = jsonwebtoken::get_current_timestamp();
                    std::time::Duration::from_secs(until.saturating_sub(now))
                });
            let expiry = async {
                match expires_in {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let change = async {
                match changes.as_mut() {
                    Some(rx) => match rx.recv().await {
                        Ok(c) => Some(c),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            Some(Change::All)
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending().await
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = engine.next() => match msg {
                    Some(WsMessage::Text(text)) => {
                        note_outgoing(&state, &text);
                        if out.text(text).await.is_err() {
                            return;
                        }
                    }
                    Some(WsMessage::Close(code, reason)) => {
                        let _ = out.close(Some(close_reason(code, reason))).await;
                        return;
                    }
                    None => break,
                },
                _ = expiry => {
                    metrics::counter!("till_ws_closed_total", "reason" => "expired").increment(1);
                    let _ = out
                        .close(Some(close_reason(UNAUTHORIZED, "the access token expired; reconnect with a fresh one".into())))
                        .await;
                    return;
                }
                Some(change) = change => {
                    if let Some(why) = still_allowed(&app, &state, change).await {
                        metrics::counter!("till_ws_closed_total", "reason" => "revoked").increment(1);
                        let _ = out.close(Some(close_reason(UNAUTHORIZED, why))).await;
                        return;
                    }
                }
                _ = known_rx.changed() => {}
            }
        }
        let _ = out.close(None).await;
    });
    Ok(response)
}

fn close_reason(code: u16, reason: String) -> actix_ws::CloseReason {
    actix_ws::CloseReason {
        code: code.into(),
        description: Some(reason),
    }
}

/// After a change to some session or role: why this socket must close (`None` when it
/// may stay open).
async fn still_allowed(app: &AppData, state: &State, change: Change) -> Option<String> {
    let (principal, session) = {
        let s = lock(state);
        let i = s.identity.as_ref()?;
        (i.caller.principal, i.caller.session)
    };
    let Principal::User { id, role } = principal else {
        return None;
    };
    if !change.touches(id, session) {
        return None;
    }
    let access = app.auth.access()?;
    match access.current_role(id, session).await {
        Ok(Some(now)) if now == role => None,
        Ok(Some(_)) => Some("the account's role changed; reconnect".into()),
        Ok(None) => Some("the session has ended; sign in again".into()),
        // Cannot tell now: keep the socket; its token's expiry still bounds it.
        Err(_) => None,
    }
}

/// Forgets subscriptions the server ended (complete, or an error that ends them).
fn note_outgoing(state: &State, text: &str) {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return;
    };
    if matches!(v["type"].as_str(), Some("complete" | "error")) {
        if let Some(id) = v["id"].as_str() {
            lock(state).active.remove(id);
        }
    }
}

/// What the gate does with a client frame.
enum Verdict {
    /// Hand it (maybe rewritten) to the protocol engine.
    Forward(Vec<u8>),
    /// Answer the client directly (an error for one operation).
    Answer(String),
    /// Close the socket.
    Close(u16, String),
}

/// An error for operation `id` in the protocol's shape.
fn refuse(legacy: bool, id: &str, code: Code, message: &str) -> Verdict {
    let error = json!({ "message": message, "extensions": { "code": code.as_str() } });
    let payload = if legacy { error } else { json!([error]) };
    Verdict::Answer(json!({ "id": id, "type": "error", "payload": payload }).to_string())
}

async fn gate(app: &AppData, state: &State, legacy: bool, frame: Vec<u8>) -> Verdict {
    let Ok(mut msg) = serde_json::from_slice::<Value>(&frame) else {
        // Not JSON: the engine answers it the protocol's way.
        return Verdict::Forward(frame);
    };
    match msg["type"].as_str() {
        Some("connection_init") => {
            if lock(state).identity.is_some() {
                return Verdict::Forward(frame);
            }
            let token = token_of(&msg["payload"]);
            let caller = match app.auth.authenticate(token.as_deref()).await {
                Ok(c) => c,
                Err(e) => return Verdict::Close(FORBIDDEN, e.to_string()),
            };
            let account_slot = match caller.principal.user_id() {
                Some(id) => match app.connections.enter_account(id.0) {
                    Some(slot) => Some(slot),
                    None => {
                        metrics::counter!("till_ws_refused_total", "reason" => "account")
                            .increment(1);
                        return Verdict::Close(
                            TOO_MANY,
                            "too many WebSocket connections for this account".into(),
                        );
                    }
                },
                None => None,
            };
            lock(state).identity = Some(Identity {
                caller,
                _account_slot: account_slot,
            });
            Verdict::Forward(frame)
        }
        Some("subscribe" | "start") => {
            let id = msg["id"].as_str().unwrap_or_default().to_owned();
            let payload = &msg["payload"];
            let query = payload["query"].as_str().map(str::to_owned);
            let extensions = payload.get("extensions").filter(|e| e.is_object());
            let document = match app.graphql.documents.resolve(query, extensions) {
                Ok(d) => d,
                Err(r) => return refuse(legacy, &id, r.code, &r.message),
            };
            let operation = payload["operationName"].as_str();
            match operation_type(&document, operation) {
                Some(OperationType::Subscription) => {}
                Some(_) => return refuse(
                    legacy,
                    &id,
                    Code::BadUserInput,
                    "only subscriptions run over WebSocket; send queries and mutations over HTTP",
                ),
                // Does not parse or names no operation: the engine reports it.
                None => {}
            }
            {
                let mut s = lock(state);
                if !s.active.contains(&id) && s.active.len() >= app.connections.max_subscriptions {
                    drop(s);
                    metrics::counter!("till_ws_refused_total", "reason" => "subscriptions")
                        .increment(1);
                    return refuse(
                        legacy,
                        &id,
                        Code::Throttled,
                        "too many subscriptions on this connection; complete one first",
                    );
                }
                s.active.insert(id);
            }
            msg["payload"]["query"] = Value::String(document);
            if let Some(p) = msg["payload"].as_object_mut() {
                p.remove("extensions");
            }
            Verdict::Forward(msg.to_string().into_bytes())
        }
        Some("complete" | "stop") => {
            if let Some(id) = msg["id"].as_str() {
                lock(state).active.remove(id);
            }
            Verdict::Forward(frame)
        }
        _ => Verdict::Forward(frame),
    }
}

/// The type of the operation a subscribe would run (`None` when the document does not
/// parse or does not name one operation).
fn operation_type(document: &str, name: Option<&str>) -> Option<OperationType> {
    let doc = async_graphql::parser::parse_query(document).ok()?;
    match name {
        Some(name) => doc
            .operations
            .iter()
            .find(|(n, _)| n.is_some_and(|n| n.as_str() == name))
            .map(|(_, op)| op.node.ty),
        None => {
            let mut ops = doc.operations.iter();
            let (_, first) = ops.next()?;
            ops.next().is_none().then_some(first.node.ty)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operation_a_subscribe_would_run_is_found() {
        assert_eq!(
            operation_type(
                "subscription { stockChanged(productId: \"x\") { sku } }",
                None
            ),
            Some(OperationType::Subscription)
        );
        assert_eq!(
            operation_type("mutation { logout(refreshToken: \"x\") }", None),
            Some(OperationType::Mutation)
        );
        assert_eq!(
            operation_type("{ categories { slug } }", None),
            Some(OperationType::Query)
        );
        let two = "query A { categories { slug } } subscription B { stockChanged(productId: \"x\") { sku } }";
        assert_eq!(operation_type(two, Some("A")), Some(OperationType::Query));
        assert_eq!(
            operation_type(two, Some("B")),
            Some(OperationType::Subscription)
        );
        assert_eq!(operation_type(two, None), None);
        assert_eq!(operation_type("not graphql", None), None);
    }
}
