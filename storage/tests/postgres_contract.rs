//! The store contract, run against a fresh Postgres schema per test.
//!
//! Needs a server: `MAILY_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each store lives in its own throwaway
//! schema; schemas of runs more than an hour old are dropped by the next run.

use maily_storage::postgres::PostgresStore;

async fn new_store() -> PostgresStore {
    let url = std::env::var("MAILY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    PostgresStore::connect_temp(&url)
        .await
        .expect("postgres store on a fresh schema (is MAILY_TEST_POSTGRES reachable?)")
}

maily_engine::store_contract!(new_store);
