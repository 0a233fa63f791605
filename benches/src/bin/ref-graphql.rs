//! Reference server for the load figures: async-graphql 7 behind actix-web answering a
//! constant 6-field query with no database. `ref-graphql 127.0.0.1:18302`.

use actix_web::{web, App, HttpResponse, HttpServer};
use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema, SimpleObject};

#[derive(SimpleObject)]
struct Product {
    id: String,
    sku: String,
    name: String,
    description: String,
    price_minor: i64,
    available: i32,
}

struct Query;

#[Object]
impl Query {
    async fn product(&self) -> Product {
        Product {
            id: "UHJvZHVjdDowMTkzYTFiMi0zYzRkLTdlNWYtOGE5Yi0wYzFkMmUzZjRhNWI=".into(),
            sku: "TEE-LTD-01".into(),
            name: "Limited tee".into(),
            description: "A reference payload.".into(),
            price_minor: 2490,
            available: 100,
        }
    }
}

type RefSchema = Schema<Query, EmptyMutation, EmptySubscription>;

async fn graphql(
    schema: web::Data<RefSchema>,
    body: web::Json<async_graphql::Request>,
) -> HttpResponse {
    let response = schema.execute(body.into_inner()).await;
    HttpResponse::Ok().json(response)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18302".into());
    let schema = web::Data::new(Schema::new(Query, EmptyMutation, EmptySubscription));
    HttpServer::new(move || {
        App::new()
            .app_data(schema.clone())
            .route("/graphql", web::post().to(graphql))
    })
    .bind(addr)?
    .run()
    .await
}
