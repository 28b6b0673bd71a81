use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn register_returns_201_location_and_the_public_view() {
    let app = spawn_app().await;
    let reply = app
        .post_json(
            "/v1/users",
            &json!({
                "username": "Kvothe",
                "full_name": "Patrick Rothfuss",
                "password": "3##Heel7sa*9-zRwT",
                "mothers_favorite_search_engine": "Duck Duck Go ",
            }),
        )
        .await;
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("location"), Some("/v1/users/Kvothe"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["username"], "Kvothe");
    assert_eq!(body["full_name"], "Patrick Rothfuss");
    assert_eq!(body["mothers_favorite_search_engine"], "Duck Duck Go");
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["totp"], "off");
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 5, "no id, hash or generation leaks: {body}");
}

#[tokio::test]
async fn every_seed_row_gets_its_documented_outcome() {
    let app = spawn_app().await;
    let seed: Vec<std::collections::HashMap<String, String>> =
        csv::Reader::from_path("data/seed-users.csv")
            .unwrap()
            .deserialize()
            .map(Result::unwrap)
            .collect();
    let mut outcomes = Vec::new();
    for user in &seed {
        let reply = app
            .post_json(
                "/v1/users",
                &json!({
                    "username": user["username"],
                    "full_name": user["full_name"],
                    "password": user["password"],
                    "mothers_favorite_search_engine": user["mothers_favorite_search_engine"],
                }),
            )
            .await;
        let codes = if reply.status == 201 {
            vec![]
        } else {
            error_codes(&assert_problem(&reply, 422))
        };
        outcomes.push((user["username"].as_str(), reply.status, codes));
    }
    let too_short = vec![("password".to_owned(), "too_short".to_owned())];
    assert_eq!(
        outcomes,
        vec![
            ("gh0st", 422, too_short.clone()),      // empty password
            ("jet-setter", 422, too_short.clone()), // r0u7!nG: 7 characters
            ("kvothe", 201, vec![]),
            ("tpratchett", 201, vec![]), // contains "Terry": still fine
            ("lmb", 422, too_short),     // the 4-character string "null"
        ]
    );
    // Trailing spaces in the free-text field are trimmed on the way in.
    let token = app.token("tpratchett", "Thats Sir Terry to you!").await;
    assert_eq!(
        app.me(&token).await.json()["mothers_favorite_search_engine"],
        "Google"
    );
}

#[tokio::test]
async fn the_empty_password_is_rejected_with_a_reason() {
    let app = spawn_app().await;
    let body = assert_problem(&app.register("gh0st", "").await, 422);
    assert_eq!(
        error_codes(&body),
        [("password".into(), "too_short".into())]
    );
    assert!(body["errors"][0]["detail"].as_str().unwrap().contains("15"));
}

#[tokio::test]
async fn json_null_password_is_a_missing_field_not_the_string_null() {
    let app = spawn_app().await;
    let reply = app
        .post_json(
            "/v1/users",
            &json!({"username": "lmb", "full_name": "Lois McMaster Bujold", "password": null,
                    "mothers_favorite_search_engine": "Yandex"}),
        )
        .await;
    let body = assert_problem(&reply, 400);
    assert_eq!(error_codes(&body), [("password".into(), "null".into())]);
}

#[tokio::test]
async fn every_invalid_field_is_reported_at_once() {
    let app = spawn_app().await;
    let reply = app
        .post_json(
            "/v1/users",
            &json!({"username": "has space", "full_name": "  ", "password": "short",
                    "mothers_favorite_search_engine": "a\u{7}b"}),
        )
        .await;
    let body = assert_problem(&reply, 422);
    let mut codes = error_codes(&body);
    codes.sort();
    assert_eq!(
        codes,
        [
            ("full_name".into(), "empty".into()),
            (
                "mothers_favorite_search_engine".into(),
                "disallowed_character".into()
            ),
            ("password".into(), "too_short".into()),
            ("username".into(), "disallowed_character".into()),
        ]
    );
}

#[tokio::test]
async fn taken_username_is_409_after_canonicalization() {
    let app = spawn_app().await;
    assert_eq!(app.register("kvothe", GOOD_PASSWORD).await.status, 201);
    for variant in ["kvothe", "KVOTHE", "Kvothe", "ＫＶＯＴＨＥ"] {
        assert_problem(&app.register(variant, GOOD_PASSWORD).await, 409);
    }
    // ... and any spelling logs in to the one account.
    app.token("ＫｖＯＴＨＥ", GOOD_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_registrations_of_one_name_yield_one_account() {
    let app = std::sync::Arc::new(spawn_app().await);
    let variants = ["race", "Race", "RACE", "ｒａｃｅ", "rAcE"];
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            let name = variants[i % variants.len()];
            tokio::spawn(async move { app.register(name, GOOD_PASSWORD).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        49,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn passwords_are_stored_only_as_argon2id_phc_strings() {
    let app = spawn_app().await;
    app.register("kvothe", GOOD_PASSWORD).await;
    let dump = app.store().dump().unwrap();
    assert!(!dump.contains(GOOD_PASSWORD));
    assert!(dump.contains("$argon2id$v=19$m=256,t=1,p=1$"));
}

/// Over HTTP: the name `me` is refused with a reason, never created.
#[tokio::test]
async fn the_name_me_cannot_be_registered() {
    let app = spawn_app().await;
    for name in ["me", "ME", "ｍｅ"] {
        let body = assert_problem(&app.register(name, GOOD_PASSWORD).await, 422);
        assert_eq!(
            error_codes(&body),
            [("username".into(), "reserved".into())],
            "{name}"
        );
    }
}

/// Over HTTP: a password of recent emoji registers and logs in.
#[tokio::test]
async fn passwords_with_new_emoji_are_accepted() {
    let app = spawn_app().await;
    let password = "correct-horse-battery-🦄🦄";
    assert_eq!(app.register("kvothe", password).await.status, 201);
    app.token("kvothe", password).await;
}
