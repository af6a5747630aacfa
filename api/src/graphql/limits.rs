//! Bounds on what one GraphQL document may make the service do, beyond depth and
//! complexity (whose model charges every query, see `QUERY_COST`).
//!
//! - At most one password field (`login` or `register`) per operation, and per batch:
//!   each costs an argon2 hash or verify (about 25 ms of a core and 19 MiB), so an alias
//!   bomb of 2,500 logins would be a minute of CPU from one request, and a way to try
//!   2,500 passwords past the per-request rate limits.
//! - At most `max_root_fields` fields at the root of an operation: root fields resolve
//!   concurrently, each with its own queries, against a pool of ten connections.
//! - At most `max_aliases` aliased fields in an operation: an alias is how one field is
//!   asked for many times over.
//!
//! The counts walk fragments as they will run, so they stop at the limit and after a
//! fixed number of steps: a chain of fragments that each spread the next twice must not
//! make the count itself the denial of service.
//!
//! The checks are a schema extension, so they hold on every transport (HTTP, batches,
//! WebSocket); the HTTP layer adds the password count across the documents of a batch.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, FragmentDefinition, OperationType, Selection,
    SelectionSet,
};
use async_graphql::{Name, Positioned, ServerError, ServerResult, Variables};
use std::collections::HashMap;

/// The root mutation fields that cost password work.
const PASSWORD_FIELDS: [&str; 2] = ["login", "register"];

/// The message of the refusal, shared by the extension and the batch check.
pub const ONE_PASSWORD_FIELD: &str =
    "at most one login or register per request (each costs a password hash)";

/// How many password fields the costliest mutation operation of `doc` selects at its
/// root, through fragments and aliases.
pub fn password_fields(doc: &ExecutableDocument) -> usize {
    operations(doc)
        .filter(|op| op.node.ty == OperationType::Mutation)
        .map(|op| {
            count_in(
                &op.node.selection_set.node,
                &doc.fragments,
                &mut HashSet::new(),
            )
        })
        .max()
        .unwrap_or(0)
}

/// Whether a query's text could hold a password field; most do not, and are not parsed
/// again for the batch count.
pub fn may_have_password_fields(query: &str) -> bool {
    PASSWORD_FIELDS.iter().any(|f| query.contains(f))
}

fn count_in(
    set: &SelectionSet,
    fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
    // Fragments already entered: a cycle (refused later by validation) counts once.
    entered: &mut HashSet<Name>,
) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                usize::from(PASSWORD_FIELDS.contains(&field.node.name.node.as_str()))
            }
            Selection::InlineFragment(inline) => {
                count_in(&inline.node.selection_set.node, fragments, entered)
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                match fragments.get(name) {
                    Some(fragment) if entered.insert(name.clone()) => {
                        count_in(&fragment.node.selection_set.node, fragments, entered)
                    }
                    _ => 0,
                }
            }
        })
        .sum()
}

/// Most fields, fragment spreads included, that one count may visit: fragments that
/// spread each other twice over would otherwise make the count itself exponential.
const MAX_STEPS: usize = 10_000;

/// Why a document is past a bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Excess {
    /// The count passed the limit: it is at least this.
    AtLeast(usize),
    /// Its fragments spread into more than [`MAX_STEPS`] fields.
    TooLarge,
}

impl Excess {
    fn message(self, what: &str, limit: usize) -> String {
        match self {
            Self::AtLeast(n) => format!("{what}: at most {limit}, and this has {n} or more"),
            Self::TooLarge => {
                format!("the document's fragments spread into more than {MAX_STEPS} fields")
            }
        }
    }
}

/// Whether an operation of `doc` has more than `limit` fields at its root (through
/// fragments), or `None` when within the limit.
pub fn too_many_root_fields(doc: &ExecutableDocument, limit: usize) -> Option<Excess> {
    operations(doc)
        .find_map(|op| count_over(doc, &op.node.selection_set.node, false, limit, |_| true))
}

/// Whether an operation of `doc` has more than `limit` aliased fields at any depth, each
/// counted where it is written and again for every further spread of its fragment: the
/// excess, or `None` when within the limit. (Only one operation runs.)
pub fn too_many_aliases(doc: &ExecutableDocument, limit: usize) -> Option<Excess> {
    operations(doc).find_map(|op| {
        count_over(doc, &op.node.selection_set.node, true, limit, |f| {
            f.alias.is_some()
        })
    })
}

/// Every operation of a document, however many it holds.
pub(crate) fn operations(
    doc: &ExecutableDocument,
) -> Box<dyn Iterator<Item = &Positioned<async_graphql::parser::types::OperationDefinition>> + '_> {
    match &doc.operations {
        DocumentOperations::Single(op) => Box::new(std::iter::once(op)),
        DocumentOperations::Multiple(ops) => Box::new(ops.values()),
    }
}

/// Counts the fields of `set` that `counts` picks, through fragments, and into
/// sub-selections when `deep`; stops as soon as the count passes `limit` or the walk
/// passes [`MAX_STEPS`].
fn count_over(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    deep: bool,
    limit: usize,
    counts: impl Fn(&Field) -> bool,
) -> Option<Excess> {
    let mut walk = Walk {
        fragments: &doc.fragments,
        entered: HashSet::new(),
        steps: 0,
        count: 0,
        limit,
        deep,
        counts: &counts,
    };
    match walk.visit(set) {
        true => None,
        false if walk.steps > MAX_STEPS => Some(Excess::TooLarge),
        false => Some(Excess::AtLeast(walk.count)),
    }
}

struct Walk<'a> {
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    /// The fragments being visited: a cycle (refused later by validation) is not
    /// entered again.
    entered: HashSet<Name>,
    steps: usize,
    count: usize,
    limit: usize,
    deep: bool,
    counts: &'a dyn Fn(&Field) -> bool,
}

impl Walk<'_> {
    /// False as soon as the count passes the limit or the steps run out.
    fn visit(&mut self, set: &SelectionSet) -> bool {
        for item in &set.items {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return false;
            }
            let within = match &item.node {
                Selection::Field(field) => {
                    self.count += usize::from((self.counts)(&field.node));
                    self.count <= self.limit
                        && (!self.deep || self.visit(&field.node.selection_set.node))
                }
                Selection::InlineFragment(inline) => self.visit(&inline.node.selection_set.node),
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    match self.fragments.get(name) {
                        Some(fragment) if self.entered.insert(name.clone()) => {
                            let within = self.visit(&fragment.node.selection_set.node);
                            self.entered.remove(name);
                            within
                        }
                        _ => true,
                    }
                }
            };
            if !within {
                return false;
            }
        }
        true
    }
}

/// Refuses a document past the bounds of the module docs, before it is validated or
/// run: the refusal costs a parse.
pub struct DocumentLimits {
    pub max_root_fields: usize,
    pub max_aliases: usize,
}

impl ExtensionFactory for DocumentLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentLimits {
            max_root_fields: self.max_root_fields,
            max_aliases: self.max_aliases,
        })
    }
}

#[async_trait::async_trait]
impl Extension for DocumentLimits {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        if password_fields(&doc) > 1 {
            return Err(ServerError::new(ONE_PASSWORD_FIELD, None));
        }
        if let Some(excess) = too_many_root_fields(&doc, self.max_root_fields) {
            let message = excess.message("root fields of an operation", self.max_root_fields);
            return Err(ServerError::new(message, None));
        }
        if let Some(excess) = too_many_aliases(&doc, self.max_aliases) {
            let message = excess.message("aliases in an operation", self.max_aliases);
            return Err(ServerError::new(message, None));
        }
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(query: &str) -> usize {
        password_fields(&async_graphql::parser::parse_query(query).unwrap())
    }

    fn doc(query: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(query).unwrap()
    }

    #[test]
    fn root_fields_and_aliases_are_counted_as_they_will_run() {
        let roots = |n: usize| {
            let fields: String = (0..n)
                .map(|i| format!("a{i}: products(first: 0) {{ totalCount }} "))
                .collect();
            doc(&format!("{{ {fields} }}"))
        };
        assert_eq!(too_many_root_fields(&roots(16), 16), None);
        assert_eq!(
            too_many_root_fields(&roots(17), 16),
            Some(Excess::AtLeast(17))
        );
        assert_eq!(too_many_aliases(&roots(17), 16), Some(Excess::AtLeast(17)));
        // Fragments count where they are spread, at the root and below.
        let spread = doc("{ ...F ...F me { ...G } } fragment F on QueryRoot { a: me { id } b: me { id } } fragment G on User { x: id y: id }");
        // Two spreads of two fields, and `me`: five; the count stops at the fourth.
        assert_eq!(too_many_root_fields(&spread, 4), Some(Excess::AtLeast(5)));
        assert_eq!(too_many_root_fields(&spread, 5), None);
        assert_eq!(too_many_aliases(&spread, 6), None);
        assert_eq!(too_many_aliases(&spread, 5), Some(Excess::AtLeast(6)));
        // Nested aliases count too.
        assert_eq!(
            too_many_aliases(&doc("{ me { a: id b: id c: username } }"), 2),
            Some(Excess::AtLeast(3))
        );
    }

    /// Thirty fragments that each spread the next twice would be 2^30 fields walked one
    /// by one: the walk stops at its step budget and calls the document too large.
    #[test]
    fn a_fragment_bomb_is_refused_without_being_walked_out() {
        let mut query = String::from("{ ...F0 } ");
        for i in 0..30 {
            query.push_str(&format!(
                "fragment F{i} on QueryRoot {{ ...F{} ...F{} }} ",
                i + 1,
                i + 1
            ));
        }
        query.push_str("fragment F30 on QueryRoot { me { id } }");
        let bomb = doc(&query);
        // At the root, the seventeenth `me` comes before the step budget runs out.
        assert_eq!(too_many_root_fields(&bomb, 16), Some(Excess::AtLeast(17)));
        // Below a field, where the root count does not look, the alias count stops too.
        let nested = doc(&query
            .replacen("{ ...F0 }", "{ me { ...F0 } }", 1)
            .replace("on QueryRoot", "on User")
            .replace("me { id }", "id"));
        assert_eq!(too_many_root_fields(&nested, 16), None);
        assert_eq!(too_many_aliases(&nested, 32), Some(Excess::TooLarge));
    }

    #[test]
    fn password_fields_are_counted_through_aliases_and_fragments() {
        assert_eq!(
            count("mutation { login(username: \"a\", password: \"b\") { id } }"),
            1
        );
        assert_eq!(
            count("mutation { a: login(username: \"a\", password: \"b\") { id } b: login(username: \"a\", password: \"c\") { id } }"),
            2
        );
        assert_eq!(
            count("mutation { ...L ... on MutationRoot { register(input: {username: \"x\", password: \"y\"}) { id } } } fragment L on MutationRoot { login(username: \"a\", password: \"b\") { id } }"),
            2
        );
        // A fragment cycle is counted once, not for ever.
        assert_eq!(
            count("mutation { ...A } fragment A on MutationRoot { login(username: \"a\", password: \"b\") { id } ...A }"),
            1
        );
        // Queries cost none; of several operations, only one runs.
        assert_eq!(count("{ login: me { id } }"), 0);
        assert_eq!(
            count("mutation A { login(username: \"a\", password: \"b\") { id } } mutation B { register(input: {username: \"x\", password: \"y\"}) { id } }"),
            1
        );
    }
}
