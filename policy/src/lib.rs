//! Who may do what: turns an identity (user and groups) and the set of
//! requirements a request carries into allow/deny decisions, with the rule
//! that decided each, using casbin role-based policies where deny wins.
//!
//! Filled in by the gateway work; today it holds nothing.
