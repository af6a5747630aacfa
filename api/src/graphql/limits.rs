//! Bounds on what one GraphQL document may make the service do, beyond depth and
//! complexity.
//!
//! - At most one password field (`login` or `register`) per operation, and per batch:
//!   each costs an argon2 hash or verify (about 25 ms of a core and 19 MiB), so an alias
//!   bomb of 2,500 logins would be a minute of CPU from one request, and a way to try
//!   2,500 passwords past the per-request rate limits.
//!
//! The check is a schema extension, so it holds on every transport (HTTP, batches,
//! WebSocket); the HTTP layer adds the count across the documents of a batch.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, FragmentDefinition, OperationType, Selection,
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
    let operations: Vec<_> = match &doc.operations {
        DocumentOperations::Single(op) => vec![op],
        DocumentOperations::Multiple(ops) => ops.values().collect(),
    };
    operations
        .into_iter()
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

/// Refuses a document whose mutation selects more than one password field.
pub struct OnePasswordField;

impl ExtensionFactory for OnePasswordField {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OnePasswordField)
    }
}

#[async_trait::async_trait]
impl Extension for OnePasswordField {
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
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(query: &str) -> usize {
        password_fields(&async_graphql::parser::parse_query(query).unwrap())
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
