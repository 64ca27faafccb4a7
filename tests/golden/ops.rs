// Golden tests, included by tests/golden.rs.
