//! Subscriptions over WebSocket on `/graphql` (`Sec-WebSocket-Protocol:
//! graphql-transport-ws`, or the legacy `graphql-ws`): actix-ws carries the frames and
//! async-graphql's protocol engine speaks GraphQL over them. The client authenticates
//! in `connection_init`: `{"Authorization": "Bearer <token>"}` (any case of the key, or
//! `authToken`). Without a token it subscribes anonymously; a bad token closes the
//! connection (4403).

use std::str::FromStr;
use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::AggregatedMessage;
use async_graphql::http::{WebSocket, WebSocketProtocols, WsMessage};
use async_graphql::Data;
use futures_util::StreamExt;
use serde_json::Value;

use crate::app::AppData;
use crate::graphql::error::{self, Code};
use crate::graphql::RequestInfo;

/// Largest client message (a subscribe with its document).
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

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
    let (mut response, session, messages) = actix_ws::handle(&req, body)?;
    if let Ok(v) = HeaderValue::from_str(&chosen) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("sec-websocket-protocol"), v);
    }
    let app = data.get_ref().clone();
    let client_ip = super::graphql::client_ip(&req, &app.trusted_proxies);

    // Client frames -> the protocol engine; pings answered here.
    let (to_engine, from_client) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let mut pong = session.clone();
    let mut messages = messages
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    actix_web::rt::spawn(async move {
        while let Some(Ok(msg)) = messages.next().await {
            let forwarded = match msg {
                AggregatedMessage::Text(t) => to_engine.send(t.as_bytes().to_vec()).await,
                AggregatedMessage::Binary(b) => to_engine.send(b.to_vec()).await,
                AggregatedMessage::Ping(p) => {
                    if pong.pong(&p).await.is_err() {
                        break;
                    }
                    Ok(())
                }
                AggregatedMessage::Pong(_) => Ok(()),
                AggregatedMessage::Close(_) => break,
            };
            if forwarded.is_err() {
                break;
            }
        }
    });

    let client = Box::pin(futures_util::stream::unfold(
        from_client,
        |mut rx| async move { rx.recv().await.map(|m| (m, rx)) },
    ));
    let schema = app.schema.clone();
    let engine = WebSocket::new(schema, client, protocol).on_connection_init(
        move |payload: Value| async move {
            let token = token_of(&payload);
            let principal = app
                .auth
                .principal(token.as_deref())
                .await
                .map_err(|e| error::coded(Code::Unauthenticated, e.to_string()))?;
            let mut data = Data::default();
            data.insert(RequestInfo {
                principal,
                request_id: uuid::Uuid::now_v7(),
                idempotency: None,
                client_ip,
            });
            Ok(data)
        },
    );
    // The protocol engine -> client frames.
    let mut out = session;
    actix_web::rt::spawn(async move {
        let mut engine = std::pin::pin!(engine);
        while let Some(msg) = engine.next().await {
            match msg {
                WsMessage::Text(text) => {
                    if out.text(text).await.is_err() {
                        return;
                    }
                }
                WsMessage::Close(code, reason) => {
                    let _ = out
                        .close(Some(actix_ws::CloseReason {
                            code: code.into(),
                            description: Some(reason),
                        }))
                        .await;
                    return;
                }
            }
        }
        let _ = out.close(None).await;
    });
    Ok(response)
}
