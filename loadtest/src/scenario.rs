//! The paper's scenario: users ramp up from one to N; each registers, logs in, and then,
//! until the run ends, adds products (some with a picture), views its own products and
//! the catalogue, edits with a guard, sells and restocks, and deletes; then logs out.
//!
//! Every stock change carries an idempotency key, and each user remembers what the stack
//! acknowledged, for the invariant check at the end ([`crate::invariant`]).

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{ApiKind, NewProduct, Partner, Seen};
use crate::invariant::Expectation;
use crate::metrics::Recorder;

/// A user holds at most this many products; past it, the oldest is deleted. It keeps the
/// catalogue's size proportional to the number of users, as in a real canteen.
const LIVE_PRODUCTS: usize = 3;
const CATEGORIES: [&str; 2] = ["makanan", "minuman"];

#[derive(Clone, Debug)]
pub struct ScenarioOptions {
    pub base: String,
    pub api: ApiKind,
    pub users: usize,
    /// Users started per second.
    pub spawn_rate: f64,
    /// How long the whole run lasts, ramp included; then every user logs out.
    pub duration: Duration,
    /// Each user waits a random time in this range after each request.
    pub think_min: Duration,
    pub think_max: Duration,
    /// The share of new products that come with a picture (0–1).
    pub picture_share: f64,
    pub password: String,
    pub request_timeout: Duration,
    /// Makes usernames and idempotency keys unique to this run.
    pub run_id: String,
}

/// Runs the scenario; answers what every user had acknowledged, for the invariant check.
pub async fn run(options: ScenarioOptions, recorder: Arc<Recorder>) -> Vec<Expectation> {
    let options = Arc::new(options);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut users = JoinSet::new();
    for index in 0..options.users {
        let delay = Duration::from_secs_f64(index as f64 / options.spawn_rate.max(0.001));
        if delay >= options.duration {
            break;
        }
        let options = options.clone();
        let recorder = recorder.clone();
        let mut stop = stop_rx.clone();
        users.spawn(async move {
            if pause(delay, &mut stop).await {
                return Vec::new();
            }
            User::new(index, options, recorder, stop).run().await
        });
    }
    tokio::time::sleep(options.duration).await;
    let _ = stop_tx.send(true);
    let mut expectations = Vec::new();
    while let Some(done) = users.join_next().await {
        if let Ok(user) = done {
            expectations.extend(user);
        }
    }
    expectations
}

/// Sleeps for `duration`; true when the run was stopped meanwhile.
async fn pause(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(duration) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// A product a user created, as the user knows it.
struct Held {
    seen: Seen,
    /// Index into the user's expectations.
    tracked: usize,
}

struct User {
    index: usize,
    options: Arc<ScenarioOptions>,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
    rng: StdRng,
    token: Option<String>,
    live: Vec<Held>,
    expectations: Vec<Expectation>,
    requests: u64,
}

impl User {
    fn new(
        index: usize,
        options: Arc<ScenarioOptions>,
        recorder: Arc<Recorder>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            index,
            rng: StdRng::seed_from_u64(index as u64),
            options,
            recorder,
            stop,
            token: None,
            live: Vec::new(),
            expectations: Vec::new(),
            requests: 0,
        }
    }

    async fn run(mut self) -> Vec<Expectation> {
        self.recorder.user_started();
        let username = format!("lt-{}-{}", self.options.run_id, self.index);
        match Partner::new(
            &self.options.base,
            self.options.api,
            username,
            self.options.request_timeout,
            self.recorder.clone(),
        ) {
            Ok(partner) => {
                if self.sign_in(&partner).await {
                    while self.iteration(&partner).await {}
                    let _ = partner.logout().await;
                }
            }
            Err(err) => eprintln!("user {}: cannot build an HTTP client: {err}", self.index),
        }
        self.recorder.user_stopped();
        self.expectations
    }

    /// Registers, then logs in (retrying after a pause), then creates the API token the
    /// invariant check reads the ledger with. False when the run ended first.
    async fn sign_in(&mut self, partner: &Partner) -> bool {
        let password = self.options.password.clone();
        // Until the account exists: a sign-up refused as busy (even after its retries)
        // is tried again, as a person would, rather than logging in to no account,
        // which only collects 401s and then the login throttle. A CONFLICT means an
        // earlier attempt did create it.
        loop {
            match partner.register(&password).await {
                Ok(()) => break,
                Err(err) if err.0.contains("CONFLICT") => break,
                Err(_) => {}
            }
            if self.think().await {
                return false;
            }
        }
        if self.think().await {
            return false;
        }
        while partner.login(&password).await.is_err() {
            if self.think().await {
                return false;
            }
        }
        if self.think().await {
            return false;
        }
        while self.token.is_none() {
            self.token = partner.create_token("loadtest").await.ok();
            if self.think().await {
                return false;
            }
        }
        true
    }

    /// One round of the journey; false once the run has ended.
    async fn iteration(&mut self, partner: &Partner) -> bool {
        self.create(partner).await;
        if self.think().await {
            return false;
        }
        let _ = partner.view_own().await;
        if self.think().await {
            return false;
        }
        let _ = partner.view_all().await;
        if self.think().await {
            return false;
        }
        if let Some(i) = self.pick() {
            let name = format!("Nasi goreng {}", self.next_request());
            let price = self.rng.gen_range(5..=50) * 1_000;
            if let Ok(seen) = partner.edit(self.live[i].seen, &name, price).await {
                self.live[i].seen = seen;
            }
            if self.think().await {
                return false;
            }
        }
        if let Some(i) = self.pick() {
            let delta = self.rng.gen_range(1..=5);
            self.adjust(partner, i, delta).await;
            if self.think().await {
                return false;
            }
        }
        if let Some(i) = self.pick().filter(|&i| self.live[i].seen.quantity > 0) {
            let most = self.live[i].seen.quantity.min(3);
            let delta = -self.rng.gen_range(1..=most);
            self.adjust(partner, i, delta).await;
            if self.think().await {
                return false;
            }
        }
        if self.live.len() > LIVE_PRODUCTS {
            let oldest = self.live.remove(0);
            match partner.delete(oldest.seen).await {
                Ok(()) => self.expectations[oldest.tracked].deleted = true,
                // Not known to be deleted: the check expects it still there, or forgets it
                // when the delete did land (the ledger still answers for it).
                Err(_) => self.expectations[oldest.tracked].delete_unconfirmed = true,
            }
            if self.think().await {
                return false;
            }
        }
        true
    }

    async fn create(&mut self, partner: &Partner) {
        let n = self.next_request();
        let picture = (self.rng.gen::<f64>() < self.options.picture_share)
            .then(|| picture_png((self.index as u64) << 20 | n));
        let product = NewProduct {
            name: format!("Nasi goreng {n}"),
            description: "hellofromloadtest".into(),
            price: self.rng.gen_range(5..=50) * 1_000,
            quantity: self.rng.gen_range(5..=50),
            category: CATEGORIES[(n % 2) as usize],
            picture,
        };
        let key = self.key("c", n);
        if let Ok(seen) = partner.create_product(&product, &key).await {
            self.expectations.push(Expectation {
                product_id: seen.id,
                token: self.token.clone().unwrap_or_default(),
                initial: seen.quantity,
                ..Expectation::default()
            });
            self.live.push(Held {
                seen,
                tracked: self.expectations.len() - 1,
            });
        }
    }

    async fn adjust(&mut self, partner: &Partner, i: usize, delta: i64) {
        let n = self.next_request();
        let key = self.key("s", n);
        let tracked = self.live[i].tracked;
        match partner
            .adjust_stock(self.live[i].seen.id, delta, &key)
            .await
        {
            Ok(seen) => {
                self.live[i].seen = seen;
                self.expectations[tracked].acknowledge(delta, key);
            }
            Err(_) => self.expectations[tracked].unacknowledged_keys.push(key),
        }
    }

    fn pick(&mut self) -> Option<usize> {
        (!self.live.is_empty()).then(|| self.rng.gen_range(0..self.live.len()))
    }

    fn next_request(&mut self) -> u64 {
        self.requests += 1;
        self.requests
    }

    fn key(&self, kind: &str, n: u64) -> String {
        format!("lt-{}-{}-{kind}{n}", self.options.run_id, self.index)
    }

    /// Waits a random think time; true when the run ended meanwhile.
    async fn think(&mut self) -> bool {
        let (min, max) = (self.options.think_min, self.options.think_max);
        let wait = if max > min {
            self.rng.gen_range(min..=max)
        } else {
            min
        };
        pause(wait, &mut self.stop).await
    }
}

/// A 96×72 PNG whose pixels depend on `seed`, so every product's picture is its own file
/// (the service stores each content once), of roughly the size of a small photo.
pub fn picture_png(seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let image = image::RgbImage::from_fn(96, 72, |_, _| image::Rgb(rng.gen::<[u8; 3]>()));
    let mut png = Vec::new();
    // Encoding an in-memory RGB image as PNG into a Vec cannot fail.
    let _ = image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png);
    png
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_valid_and_differ_by_seed() {
        let a = picture_png(1);
        let b = picture_png(2);
        assert!(a.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_ne!(a, b);
        assert_eq!(a, picture_png(1));
        assert!(
            image::load_from_memory(&a).is_ok(),
            "the PNG does not decode"
        );
    }
}
