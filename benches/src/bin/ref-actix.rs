//! Reference server for the load figures: a bare actix-web handler returning a fixed
//! 440-byte JSON body. `ref-actix 127.0.0.1:18301`.

use actix_web::{web, App, HttpResponse, HttpServer};

const BODY: &str = r#"{"data":{"product":{"id":"UHJvZHVjdDowMTkzYTFiMi0zYzRkLTdlNWYtOGE5Yi0wYzFkMmUzZjRhNWI=","sku":"TEE-LTD-01","name":"Limited tee","description":"A reference payload of the same size as a typical product answer.","price":{"amount":"24.90","currency":"EUR"},"available":100,"status":"ACTIVE","categoryPath":[{"slug":"apparel","name":"Apparel"},{"slug":"tees","name":"Tees"}]}}}"#;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18301".into());
    HttpServer::new(|| {
        App::new().route(
            "/",
            web::to(|| async {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(BODY)
            }),
        )
    })
    .bind(addr)?
    .run()
    .await
}
