//! What the balancer knows of the replicas' routes, and nothing more: which envelope its
//! own refusals take, how large a request's body may be, which writes honour an
//! `Idempotency-Key` (and so may be replayed), and which request may become a WebSocket.
//!
//! The replicas stay the judges of every rule; these are the bounds the balancer
//! enforces before a replica is asked, so that a request no replica would take never
//! takes a replica's time. Each bound mirrors the replica's default (`ecanteen-api
//! --body-limit`, `--picture-max-bytes`, `--max-files`), and each is a flag.

use http::Method;

/// How an error is shaped on a route: REST's `{"error": {"code", "message"}}` under
/// `/ecanteen` (the REST contract, shared/specs/rest-compat.md), GraphQL's
/// `{"errors": [{"message", "extensions": {"code"}}]}` everywhere else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Envelope {
    Rest,
    GraphQl,
}

/// Which bound a request's body is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// JSON (GraphQL and REST): read whole before a replica is leased.
    Json,
    /// `PUT /ecanteen/product/{id}/image`: one picture and its form.
    Picture,
    /// `POST /graphql` as `multipart/form-data`: up to `max_files` pictures.
    Uploads,
}

/// One request's route, as far as the balancer cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub envelope: Envelope,
    pub body: BodyKind,
    /// The route answers a repeat of a keyed write with its first result (the REST
    /// writes that read `Idempotency-Key`). `/graphql` reads keys from the mutation's
    /// input, never from the header; login, logout and a password change take none.
    pub honours_key: bool,
    /// `GET /graphql/ws`, the one route that may be upgraded to a WebSocket.
    pub websocket: bool,
}

/// The bounds on bodies, in bytes (the replicas' defaults: 1 MiB, 5 MiB, 4 files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    pub json: usize,
    pub picture: usize,
    pub max_files: usize,
}

impl BodyLimits {
    /// The most bytes a body of `kind` may have: what the replica reads at most (a
    /// picture's or the pictures' bytes, plus the rest of the form at the JSON bound).
    pub fn of(&self, kind: BodyKind) -> usize {
        match kind {
            BodyKind::Json => self.json,
            BodyKind::Picture => self.picture.saturating_add(self.json),
            BodyKind::Uploads => self
                .picture
                .saturating_mul(self.max_files)
                .saturating_add(self.json),
        }
    }
}

/// The route of `method path` with `content_type` (its essence is enough).
pub fn classify(method: &Method, path: &str, content_type: Option<&[u8]>) -> Route {
    let rest = path == "/ecanteen" || path.starts_with("/ecanteen/");
    let multipart = content_type
        .is_some_and(|v| v.len() >= 19 && v[..19].eq_ignore_ascii_case(b"multipart/form-data"));
    let segments: Vec<&str> = path
        .strip_prefix("/ecanteen/")
        .map(|p| p.split('/').collect())
        .unwrap_or_default();
    let body = match (method, segments.as_slice()) {
        (&Method::PUT, ["product", _, "image"]) => BodyKind::Picture,
        (&Method::POST, _) if path == "/graphql" && multipart => BodyKind::Uploads,
        _ => BodyKind::Json,
    };
    let honours_key = rest
        && matches!(
            (method, segments.as_slice()),
            (&Method::POST, ["join"])
                | (&Method::POST, ["tokens"])
                | (&Method::DELETE, ["tokens", _])
                | (&Method::POST, ["product"])
                | (&Method::PUT, ["product"])
                | (&Method::PUT, ["product", _])
                | (&Method::DELETE, ["product", _])
                | (&Method::POST, ["product", _, "stock"])
                | (&Method::PUT, ["product", _, "image"])
        );
    Route {
        envelope: if rest {
            Envelope::Rest
        } else {
            Envelope::GraphQl
        },
        body,
        honours_key,
        websocket: method == Method::GET && path == "/graphql/ws",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> Route {
        classify(&method.parse().unwrap(), path, None)
    }

    #[test]
    fn rest_is_everything_under_ecanteen_and_nothing_else() {
        for path in [
            "/ecanteen",
            "/ecanteen/",
            "/ecanteen/product/7",
            "/ecanteen/nope",
        ] {
            assert_eq!(route("GET", path).envelope, Envelope::Rest, "{path}");
        }
        for path in ["/graphql", "/", "/ecanteenx", "/images/a.jpg", "/healthz"] {
            assert_eq!(route("GET", path).envelope, Envelope::GraphQl, "{path}");
        }
    }

    #[test]
    fn only_the_rest_writes_that_read_the_key_honour_it() {
        let honoured = [
            ("POST", "/ecanteen/join"),
            ("POST", "/ecanteen/tokens"),
            ("DELETE", "/ecanteen/tokens/3"),
            ("POST", "/ecanteen/product"),
            ("PUT", "/ecanteen/product"),
            ("PUT", "/ecanteen/product/3"),
            ("DELETE", "/ecanteen/product/3"),
            ("POST", "/ecanteen/product/3/stock"),
            ("PUT", "/ecanteen/product/3/image"),
        ];
        for (method, path) in honoured {
            assert!(route(method, path).honours_key, "{method} {path}");
        }
        let ignored = [
            ("POST", "/ecanteen/login"),
            ("POST", "/ecanteen/logout"),
            ("GET", "/ecanteen/logout"),
            ("PUT", "/ecanteen/password"),
            ("POST", "/graphql"),
            ("POST", "/ecanteen/product/3/stock/x"),
            ("PATCH", "/ecanteen/product/3"),
        ];
        for (method, path) in ignored {
            assert!(!route(method, path).honours_key, "{method} {path}");
        }
    }

    #[test]
    fn bodies_are_bound_by_route() {
        let limits = BodyLimits {
            json: 1 << 20,
            picture: 5 << 20,
            max_files: 4,
        };
        assert_eq!(limits.of(route("POST", "/graphql").body), 1 << 20);
        assert_eq!(limits.of(route("POST", "/ecanteen/product").body), 1 << 20);
        assert_eq!(
            limits.of(route("PUT", "/ecanteen/product/9/image").body),
            6 << 20
        );
        let upload = classify(
            &Method::POST,
            "/graphql",
            Some(b"Multipart/Form-Data; boundary=x"),
        );
        assert_eq!(limits.of(upload.body), 21 << 20);
        // Multipart elsewhere is still JSON's bound: only /graphql takes uploads.
        let elsewhere = classify(
            &Method::POST,
            "/ecanteen/product",
            Some(b"multipart/form-data"),
        );
        assert_eq!(elsewhere.body, BodyKind::Json);
    }

    #[test]
    fn only_get_graphql_ws_may_become_a_websocket() {
        assert!(route("GET", "/graphql/ws").websocket);
        for (method, path) in [
            ("POST", "/graphql/ws"),
            ("GET", "/graphql"),
            ("GET", "/graphql/ws/x"),
        ] {
            assert!(!route(method, path).websocket, "{method} {path}");
        }
    }
}
