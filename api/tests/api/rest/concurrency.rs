//! The +/− buttons under contention, across two replicas: no change is lost, and stock
//! never goes below zero.

use serde_json::json;

use super::{create, fetch, id_of, rest_partner};
use crate::helpers::{dual_tests, SendTo as _};

dual_tests! {
    async fn sixteen_clients_adding_forty_times_lose_nothing(app) {
        let mut owner = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut owner, "Kerupuk", 0).await);
        let sibling = app.sibling().await;
        let uri = format!("/ecanteen/product/{id}/stock");
        let mut tasks = Vec::new();
        for client in 0..16 {
            let mut c = if client % 2 == 0 { owner.clone() } else { owner.to(&sibling) };
            let uri = uri.clone();
            tasks.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..40 {
                    let r = c.rest("POST", &uri, Some(json!({"delta": 1})), &[]).await;
                    statuses.push((r.status.as_u16(), r.text()));
                }
                statuses
            }));
        }
        for task in tasks {
            for (status, body) in task.await.unwrap() {
                assert_eq!(status, 200, "{body}");
            }
        }
        assert_eq!(fetch(&mut owner, id).await.json()["quantity"], 640);
    }

    async fn decrements_past_the_stock_sell_exactly_the_stock(app) {
        let mut owner = rest_partner(&app, "saif").await;
        let id = id_of(&create(&mut owner, "Nasi Uduk", 100).await);
        let sibling = app.sibling().await;
        let uri = format!("/ecanteen/product/{id}/stock");
        let mut tasks = Vec::new();
        for client in 0..16 {
            let mut c = if client % 2 == 0 { owner.clone() } else { owner.to(&sibling) };
            let uri = uri.clone();
            tasks.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..10 {
                    let r = c.rest("POST", &uri, Some(json!({"delta": "-1", "reason": "sale"})), &[]).await;
                    outcomes.push((r.status.as_u16(), r.json()));
                }
                outcomes
            }));
        }
        let (mut sold, mut refused) = (0, 0);
        for task in tasks {
            for (status, body) in task.await.unwrap() {
                match status {
                    200 => sold += 1,
                    409 => {
                        assert_eq!(body["error"]["code"], "INSUFFICIENT_STOCK", "{body}");
                        refused += 1;
                    }
                    other => panic!("{other}: {body}"),
                }
            }
        }
        assert_eq!((sold, refused), (100, 60));
        assert_eq!(fetch(&mut owner, id).await.json()["quantity"], 0);
    }
}
