//! The store contract, run against a fresh SQLite file per test.

use maily_storage::SqliteStore;

async fn new_store() -> SqliteStore {
    SqliteStore::open_temp()
        .await
        .expect("temporary sqlite store")
}

maily_engine::store_contract!(new_store);
