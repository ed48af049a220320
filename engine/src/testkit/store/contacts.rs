//! Contract cases of contacts, lists and segments.

use crate::ports::{Store, StoreError};
use crate::testkit::addr;
use crate::{Contact, ContactList, ListId, Segment, SegmentId, TenantId, Timestamp};
use std::collections::BTreeMap;

async fn tenant(store: &impl Store, slug: &str) -> TenantId {
    let t = TenantId::parse(slug).unwrap();
    store.upsert_tenant(&t, slug).await.unwrap();
    t
}

fn contact(tenant: &TenantId, email: &str, plan: &str, at: i64) -> Contact {
    Contact {
        tenant: tenant.clone(),
        email: addr(email),
        attributes: BTreeMap::from([("plan".to_string(), plan.to_string())]),
        created_at: Timestamp(at),
        updated_at: Timestamp(at),
    }
}

fn emails(contacts: &[Contact]) -> Vec<&str> {
    contacts.iter().map(|c| c.email.as_str()).collect()
}

fn names_address(e: &StoreError, address: &str) -> bool {
    matches!(e, StoreError::InvalidRow { row, reason } if row.contains(address) || reason.contains(address))
}

/// Upserts replace attributes and keep `created_at`; pages follow address order;
/// tenants do not see each other's contacts.
pub async fn contacts_upsert_and_page(store: &impl Store) {
    let acme = tenant(store, "acme").await;
    let beta = tenant(store, "beta").await;
    let a = addr("a@example.com");
    assert_eq!(store.contact(&acme, &a).await.unwrap(), None);
    store.upsert_contacts(&[]).await.unwrap();

    let first = contact(&acme, "a@example.com", "free", 1_000);
    store
        .upsert_contacts(std::slice::from_ref(&first))
        .await
        .unwrap();
    assert_eq!(store.contact(&acme, &a).await.unwrap(), Some(first));
    let mut again = contact(&acme, "a@example.com", "pro", 5_000);
    again.attributes.insert("city".into(), "Zürich".into());
    store.upsert_contacts(&[again.clone()]).await.unwrap();
    let expected = Contact {
        created_at: Timestamp(1_000),
        ..again
    };
    assert_eq!(store.contact(&acme, &a).await.unwrap(), Some(expected));
    assert_eq!(store.contact(&beta, &a).await.unwrap(), None);

    // Given twice in one call: as if upserted one after the other.
    let twice = [
        contact(&acme, "t@example.com", "free", 2_000),
        contact(&acme, "t@example.com", "pro", 3_000),
    ];
    store.upsert_contacts(&twice).await.unwrap();
    let t = store
        .contact(&acme, &addr("t@example.com"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.attributes["plan"].as_str(), t.created_at, t.updated_at),
        ("pro", Timestamp(2_000), Timestamp(3_000))
    );

    let more: Vec<Contact> = ["e", "c", "b", "d"]
        .iter()
        .map(|l| contact(&acme, &format!("{l}@example.com"), "free", 1))
        .chain([contact(&beta, "zz@example.com", "free", 1)])
        .collect();
    store.upsert_contacts(&more).await.unwrap();
    let page = store.contacts(&acme, None, None, 2).await.unwrap();
    assert_eq!(emails(&page), ["a@example.com", "b@example.com"]);
    let page = store
        .contacts(&acme, None, Some(&page[1].email), 3)
        .await
        .unwrap();
    assert_eq!(
        emails(&page),
        ["c@example.com", "d@example.com", "e@example.com"]
    );
    let page = store
        .contacts(&acme, None, Some(&page[2].email), 3)
        .await
        .unwrap();
    assert_eq!(emails(&page), ["t@example.com"]);
    let page = store
        .contacts(&acme, None, Some(&page[0].email), 3)
        .await
        .unwrap();
    assert!(page.is_empty());
    assert_eq!(
        emails(&store.contacts(&beta, None, None, 10).await.unwrap()),
        ["zz@example.com"]
    );

    // A missing tenant refuses the whole call, naming the row.
    let nobody = TenantId::parse("nobody").unwrap();
    let err = store
        .upsert_contacts(&[
            contact(&acme, "new@example.com", "free", 1),
            contact(&nobody, "x@example.com", "free", 1),
        ])
        .await
        .unwrap_err();
    assert!(names_address(&err, "x@example.com"), "{err}");
    assert_eq!(
        store
            .contact(&acme, &addr("new@example.com"))
            .await
            .unwrap(),
        None
    );

    assert!(store.delete_contact(&acme, &a).await.unwrap());
    assert!(!store.delete_contact(&acme, &a).await.unwrap());
    assert_eq!(store.contact(&acme, &a).await.unwrap(), None);
    assert!(
        !store
            .delete_contact(&beta, &addr("b@example.com"))
            .await
            .unwrap()
    );
    assert!(
        store
            .contact(&acme, &addr("b@example.com"))
            .await
            .unwrap()
            .is_some()
    );
}

fn new_list(tenant: &TenantId, name: &str, at: i64) -> ContactList {
    ContactList {
        id: ListId::new(),
        tenant: tenant.clone(),
        name: name.into(),
        created_at: Timestamp(at),
    }
}

async fn members(store: &impl Store, tenant: &TenantId, list: ListId) -> Vec<String> {
    let page = store.contacts(tenant, Some(list), None, 100).await.unwrap();
    page.into_iter().map(|c| c.email.to_string()).collect()
}

/// Lists hold existing contacts of their tenant; adding is idempotent and all or
/// nothing; deleting a contact or a list deletes its memberships.
pub async fn lists_and_members(store: &impl Store) {
    let acme = tenant(store, "acme").await;
    let beta = tenant(store, "beta").await;
    let contacts: Vec<Contact> = ["a", "b", "c", "d"]
        .iter()
        .map(|l| contact(&acme, &format!("{l}@example.com"), "free", 1))
        .collect();
    store.upsert_contacts(&contacts).await.unwrap();
    store
        .upsert_contacts(&[contact(&beta, "x@example.com", "free", 1)])
        .await
        .unwrap();

    let later = new_list(&acme, "Newsletter", 2_000);
    let earlier = new_list(&acme, "VIP", 1_000);
    let theirs = new_list(&beta, "Theirs", 500);
    for l in [&later, &earlier, &theirs] {
        store.create_list(l).await.unwrap();
    }
    assert!(matches!(
        store.create_list(&later).await,
        Err(StoreError::Conflict(_))
    ));
    let orphan = new_list(&TenantId::parse("nobody").unwrap(), "Orphan", 1);
    assert!(matches!(
        store.create_list(&orphan).await,
        Err(StoreError::InvalidRow { .. })
    ));
    assert_eq!(
        store.lists(&acme).await.unwrap(),
        vec![earlier.clone(), later.clone()]
    );
    assert_eq!(
        store.list(&acme, later.id).await.unwrap(),
        Some(later.clone())
    );
    assert_eq!(store.list(&beta, later.id).await.unwrap(), None);
    assert_eq!(store.list(&acme, ListId::new()).await.unwrap(), None);

    let ab = [addr("a@example.com"), addr("b@example.com")];
    assert_eq!(
        store.add_list_members(&acme, later.id, &ab).await.unwrap(),
        2
    );
    assert_eq!(
        store
            .add_list_members(
                &acme,
                later.id,
                &[ab[0].clone(), addr("c@example.com"), addr("c@example.com")]
            )
            .await
            .unwrap(),
        1,
        "only c was not a member"
    );
    assert_eq!(
        members(store, &acme, later.id).await,
        ["a@example.com", "b@example.com", "c@example.com"]
    );

    // Not a contact of the tenant (another tenant's counts as none): nothing added.
    for stranger in ["nobody@example.com", "x@example.com"] {
        let err = store
            .add_list_members(&acme, later.id, &[addr("d@example.com"), addr(stranger)])
            .await
            .unwrap_err();
        assert!(names_address(&err, stranger), "{err}");
    }
    assert_eq!(members(store, &acme, later.id).await.len(), 3);
    // Another tenant's list is unknown.
    assert!(matches!(
        store
            .add_list_members(&beta, later.id, &[addr("x@example.com")])
            .await,
        Err(StoreError::InvalidRow { .. })
    ));
    assert_eq!(
        store
            .remove_list_members(&beta, later.id, &ab)
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .contacts(&beta, Some(later.id), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.delete_list(&beta, later.id).await.unwrap());

    // Pages of a list's members.
    let page = store
        .contacts(&acme, Some(later.id), Some(&addr("a@example.com")), 1)
        .await
        .unwrap();
    assert_eq!(emails(&page), ["b@example.com"]);
    assert_eq!(page[0], contacts[1]);

    store
        .add_list_members(&acme, earlier.id, &[addr("b@example.com")])
        .await
        .unwrap();
    assert_eq!(
        store
            .remove_list_members(
                &acme,
                later.id,
                &[addr("a@example.com"), addr("d@example.com")]
            )
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .delete_contact(&acme, &addr("b@example.com"))
            .await
            .unwrap()
    );
    assert_eq!(members(store, &acme, later.id).await, ["c@example.com"]);
    assert!(members(store, &acme, earlier.id).await.is_empty());
    store.upsert_contacts(&[contacts[1].clone()]).await.unwrap();
    assert_eq!(
        members(store, &acme, later.id).await,
        ["c@example.com"],
        "a contact created again is not a member again"
    );

    assert!(store.delete_list(&acme, later.id).await.unwrap());
    assert!(!store.delete_list(&acme, later.id).await.unwrap());
    assert!(members(store, &acme, later.id).await.is_empty());
    assert_eq!(store.lists(&acme).await.unwrap(), vec![earlier]);
    assert_eq!(
        store.contacts(&acme, None, None, 10).await.unwrap().len(),
        4,
        "deleting a list keeps its contacts"
    );
    assert_eq!(store.lists(&beta).await.unwrap(), vec![theirs]);
}

fn new_segment(tenant: &TenantId, list: Option<ListId>, at: i64) -> Segment {
    Segment {
        id: SegmentId::new(),
        tenant: tenant.clone(),
        name: format!("segment at {at}"),
        list,
        filter: "plan == \"pro\" and city != \"Bern\"".into(),
        created_at: Timestamp(at),
    }
}

/// Segments come back as stored, per tenant and oldest first.
pub async fn segments_round_trip(store: &impl Store) {
    let acme = tenant(store, "acme").await;
    let beta = tenant(store, "beta").await;
    let list = new_list(&acme, "VIP", 1);
    store.create_list(&list).await.unwrap();
    let later = new_segment(&acme, Some(list.id), 2_000);
    let earlier = new_segment(&acme, None, 1_000);
    let theirs = new_segment(&beta, None, 1_500);
    for s in [&later, &earlier, &theirs] {
        store.create_segment(s).await.unwrap();
    }
    assert!(matches!(
        store.create_segment(&later).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .create_segment(&new_segment(&TenantId::parse("nobody").unwrap(), None, 1))
            .await,
        Err(StoreError::InvalidRow { .. })
    ));
    assert_eq!(
        store.segments(&acme).await.unwrap(),
        vec![earlier.clone(), later.clone()]
    );
    assert_eq!(store.segments(&beta).await.unwrap(), vec![theirs.clone()]);
    assert_eq!(
        store.segment(&acme, later.id).await.unwrap(),
        Some(later.clone())
    );
    assert_eq!(store.segment(&beta, later.id).await.unwrap(), None);
    assert!(!store.delete_segment(&beta, later.id).await.unwrap());
    assert!(store.delete_segment(&acme, later.id).await.unwrap());
    assert!(!store.delete_segment(&acme, later.id).await.unwrap());
    assert_eq!(store.segments(&acme).await.unwrap(), vec![earlier]);
    assert_eq!(store.segment(&beta, theirs.id).await.unwrap(), Some(theirs));
}
