//! The GraphQL documents the tests and the load tester send, each written once.
//!
//! A test that checks a particular selection (an error's shape, a field's value
//! under a rule) writes its own document beside its assertion; the everyday
//! operations of a partner are here.

/// Signs a partner up: variables `u` (username) and `p` (password).
pub const REGISTER: &str = "mutation($u: String!, $p: String!) { \
    register(input: {username: $u, password: $p}) { id username } }";

/// Logs in and sets the session cookie: variables `u` and `p`.
pub const LOGIN: &str = "mutation($u: String!, $p: String!) { \
    login(username: $u, password: $p) { id username } }";

/// Ends the session.
pub const LOGOUT: &str = "mutation { logout }";

/// Creates an API token for the logged-in partner: variable `n` (its name).
pub const CREATE_API_TOKEN: &str = "mutation($n: String!) { createApiToken(name: $n) { token } }";

/// Creates a product: variables `i` (`CreateProductInput`) and, optionally, `image`.
pub const CREATE_PRODUCT: &str = "mutation($i: CreateProductInput!, $image: Upload) { \
    createProduct(input: $i, image: $image) { id quantity version } }";

/// Renames or reprices a product: variables `id`, `i` (`UpdateProductInput`) and
/// `v` (the version the partner last saw).
pub const UPDATE_PRODUCT: &str = "mutation($id: ID!, $i: UpdateProductInput!, $v: Int) { \
    updateProduct(id: $id, input: $i, expectedVersion: $v) { id quantity version } }";

/// Deletes a product: variables `id` and `v` (the version last seen).
pub const DELETE_PRODUCT: &str =
    "mutation($id: ID!, $v: Int) { deleteProduct(id: $id, expectedVersion: $v) { id } }";

/// Adds or sells stock: variable `i` (`AdjustStockInput`).
pub const ADJUST_STOCK: &str = "mutation($i: AdjustStockInput!) { adjustStock(input: $i) { \
    product { id quantity version } movement { id quantityAfter } replayed } }";

/// One product's quantity: variable `id`.
pub const PRODUCT_QUANTITY: &str = "query($id: ID!) { product(id: $id) { quantity } }";

/// A partner's own products (the paper's "view"): variable `u` (the username).
pub const OWN_PRODUCTS: &str = "query($u: String!) { \
    products(first: 100, filter: {ownerUsername: $u}) { \
    nodes { id name description price quantity category version imageUrl } } }";

/// The first page of the whole catalogue with owners (the paper's "view all").
pub const CATALOGUE_WITH_OWNERS: &str = "{ products(first: 50) { nodes { \
    id name description price quantity category imageUrl owner { username } } } }";

/// The read the load tester's capacity mode repeats: 20 products, no owners.
pub const CATALOGUE_PAGE: &str = "{ products(first: 20) { nodes { id name price quantity } } }";

/// Who the credential belongs to.
pub const ME: &str = "{ me { username } }";
