//! R8, access control: a bearer token guards the `StatusUpdateManager` service (health
//! stays open), TLS through rustls, and the configuration that refuses a non-loopback
//! listen address with neither.
//!
//! The servers run in-process on `127.0.0.1:0` over a temporary data directory
//! (`common::server`); the CLI runs as the built binary, as a child process
//! (`common::process`). The TLS certificate is generated here, self-signed for `localhost`,
//! with `rcgen`. Every wait is bounded; a child still running after `PROCESS_BOUND` is
//! killed and fails the test.
#![cfg(feature = "service")]

mod common;

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Channel};
use tonic::Code;
use uuid::Uuid;

use status_update_manager::cli::client::connect_with;
use status_update_manager::proto::status_update_manager::v1::status_update_manager_client::StatusUpdateManagerClient;
use status_update_manager::proto::status_update_manager::v1::{
    ListStreamsRequest, Status, StatusUpdate, UpdateRequest,
};
use status_update_manager::service::RunningService;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use common::process::{Finished, Proc};
use common::server::{settings, start_service};

/// The token of the servers that require one.
const TOKEN: &str = "3f1d0c4e-token-of-the-test";

/// The service name health reports on.
const SERVICE: &str = "status_update_manager.v1.StatusUpdateManager";

/// A service started in-process with `env` on top of the defaults.
async fn start(dir: &Path, env: &[(&str, &str)]) -> RunningService {
    start_service(settings(&dir.join("data"), "127.0.0.1:0", env)).await
}

/// Writes `content` to `dir/name` and returns its path as text.
fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write a test file");
    path.to_str().expect("a UTF-8 temp path").to_string()
}

fn list() -> ListStreamsRequest {
    ListStreamsRequest::default()
}

/// A plain generated client: no token, no interceptor.
async fn plain_client(url: String) -> StatusUpdateManagerClient<Channel> {
    StatusUpdateManagerClient::connect(url)
        .await
        .expect("the client connects")
}

#[actix::test]
async fn the_api_requires_the_token_and_health_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write(dir.path(), "token", &format!("{TOKEN}\n"));
    let running = start(dir.path(), &[("SUM__SERVER__AUTH_TOKEN_FILE", &token_file)]).await;
    let url = format!("http://{}", running.local_addr);

    // No token: UNAUTHENTICATED, saying what is expected; nothing is done.
    let mut plain = plain_client(url.clone()).await;
    let status = plain.list_streams(list()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("Bearer <token>")
            && status.message().contains("server.auth_token_file"),
        "{status:?}"
    );
    let update = UpdateRequest {
        update: Some(StatusUpdate {
            stream_id: "guarded".into(),
            framework_id: String::new(),
            status: Some(Status {
                uuid: Uuid::new_v4().as_bytes().to_vec(),
                state: "RUNNING".into(),
                ..Status::default()
            }),
            latest_status: None,
        }),
        memory_only: false,
    };
    let status = plain.update(update.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Wrong tokens, and a token that is not a bearer token: UNAUTHENTICATED; the server
    // never echoes its token.
    for (i, value) in [
        "Bearer not-the-token",
        &format!("Bearer {TOKEN}x"),
        &format!("Basic {TOKEN}"),
        TOKEN,
    ]
    .into_iter()
    .enumerate()
    {
        let mut request = tonic::Request::new(list());
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
        let status = plain.list_streams(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "case {i}: {status:?}");
        assert!(!status.message().contains(TOKEN), "case {i}: {status:?}");
    }

    // The right token (the CLI's client adds it): OK.
    let token = status_update_manager::service::auth::BearerToken::read(Path::new(&token_file))
        .expect("the token file");
    let mut client = connect_with(&url, Some(&token), None)
        .await
        .expect("connect with the token");
    assert!(
        !client
            .update(update)
            .await
            .expect("Update")
            .into_inner()
            .duplicate
    );
    let streams = client.list_streams(list()).await.expect("ListStreams");
    assert_eq!(streams.into_inner().streams.len(), 1);

    // Health needs no token.
    let channel = Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .expect("health connects");
    let mut health = HealthClient::new(channel);
    for service in ["", SERVICE] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health of {service:?} without a token: {s}"));
        assert_eq!(
            response.into_inner().status,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    running.shutdown().await.expect("a clean shutdown");
}

/// A validation case: `server.listen`, the `SUM__…` variables, and `Ok` or the keys the
/// error names, one line each.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Result<(), &'a [&'a str]>);

#[test]
fn a_listen_address_beyond_loopback_needs_tls_a_token_or_allow_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", "s3cret\n");
    let empty = write(dir.path(), "empty", "\n");
    let (cert, key) = self_signed(dir.path());
    let missing = dir.path().join("missing").display().to_string();
    let data = dir.path().join("data");
    let cases: [Case; 12] = [
        ("127.0.0.1:0", vec![], Ok(())),
        ("[::1]:0", vec![], Ok(())),
        ("0.0.0.0:0", vec![], Err(&["server.listen"])),
        ("[::]:50051", vec![], Err(&["server.listen"])),
        (
            "0.0.0.0:0",
            vec![("SUM__SERVER__ALLOW_INSECURE", "true")],
            Ok(()),
        ),
        (
            "0.0.0.0:0",
            vec![("SUM__SERVER__AUTH_TOKEN_FILE", &token)],
            Ok(()),
        ),
        (
            "0.0.0.0:0",
            vec![
                ("SUM__SERVER__TLS_CERT_FILE", &cert),
                ("SUM__SERVER__TLS_KEY_FILE", &key),
            ],
            Ok(()),
        ),
        (
            "127.0.0.1:0",
            vec![("SUM__SERVER__TLS_CERT_FILE", &cert)],
            Err(&["server.tls_key_file"]),
        ),
        (
            "127.0.0.1:0",
            vec![("SUM__SERVER__TLS_KEY_FILE", &key)],
            Err(&["server.tls_cert_file"]),
        ),
        (
            "127.0.0.1:0",
            vec![
                ("SUM__SERVER__TLS_CERT_FILE", &key),
                ("SUM__SERVER__TLS_KEY_FILE", &cert),
            ],
            Err(&["server.tls_cert_file", "server.tls_key_file"]),
        ),
        (
            "127.0.0.1:0",
            vec![("SUM__SERVER__AUTH_TOKEN_FILE", &empty)],
            Err(&["server.auth_token_file"]),
        ),
        (
            "0.0.0.0:0",
            vec![("SUM__SERVER__AUTH_TOKEN_FILE", &missing)],
            Err(&["server.auth_token_file"]),
        ),
    ];
    for (i, (listen, env, want)) in cases.iter().enumerate() {
        let result = settings(&data, listen, env).validate();
        match (result, want) {
            (Ok(_), Ok(())) => {}
            (Err(err), Err(keys)) => {
                let text = err.to_string();
                let lines: Vec<&str> = text.lines().collect();
                assert_eq!(lines.len(), keys.len(), "case {i}: {text}");
                for (line, key) in lines.iter().zip(keys.iter()) {
                    assert!(
                        line.starts_with(&format!("invalid configuration: {key} = ")),
                        "case {i}: {line}"
                    );
                }
                if keys == &["server.listen"] {
                    assert!(text.contains(&format!("{listen:?}")), "case {i}: {text}");
                    for needed in [
                        "server.tls_cert_file",
                        "server.auth_token_file",
                        "server.allow_insecure = true",
                    ] {
                        assert!(text.contains(needed), "case {i}: {text}");
                    }
                }
                assert!(!text.contains("s3cret"), "case {i}: {text}");
            }
            (got, want) => panic!("case {i}: {listen} {env:?}: got {got:?}, want {want:?}"),
        }
    }
}

/// A self-signed certificate for `localhost` and its key, written as PEM files under
/// `dir`; returns their paths.
fn self_signed(dir: &Path) -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("generate a certificate");
    let cert = write(dir, "cert.pem", &certified.cert.pem());
    let key = write(dir, "key.pem", &certified.signing_key.serialize_pem());
    (cert, key)
}

#[actix::test]
async fn tls_serves_clients_that_trust_the_certificate_only() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let running = start(
        dir.path(),
        &[
            ("SUM__SERVER__TLS_CERT_FILE", &cert),
            ("SUM__SERVER__TLS_KEY_FILE", &key),
        ],
    )
    .await;
    let port = running.local_addr.port();
    let ca = Certificate::from_pem(std::fs::read(&cert).unwrap());

    // A client that trusts the certificate: OK.
    let url = format!("https://localhost:{port}");
    let mut client = connect_with(&url, None, Some(&ca))
        .await
        .expect("a TLS client connects");
    let streams = client
        .list_streams(list())
        .await
        .expect("ListStreams over TLS");
    assert!(streams.into_inner().streams.is_empty());

    // The CLI with --ca-file: OK; without it, refused before connecting.
    let cli = |extra: &[&str]| {
        let mut args = vec!["streams".to_string(), "--server".into(), url.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cli(&args, &[])
        })
    };
    let out = cli(&["--ca-file", &cert]).await.unwrap();
    let stderr = &out.stderr;
    assert!(out.status.success(), "streams --ca-file over TLS: {stderr}");
    let out = cli(&[]).await.unwrap();
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs --ca-file"), "{stderr}");

    // A client that trusts another certificate: refused.
    let other_dir = tempfile::tempdir().unwrap();
    let (other, _) = self_signed(other_dir.path());
    let other = Certificate::from_pem(std::fs::read(other).unwrap());
    let refused = match connect_with(&url, None, Some(&other)).await {
        Err(err) => err.to_string(),
        Ok(mut client) => client.list_streams(list()).await.unwrap_err().to_string(),
    };
    assert!(
        refused.contains("UNAVAILABLE") || refused.contains("certificate"),
        "{refused}"
    );

    // A plaintext client: no answer.
    let plain = format!("http://127.0.0.1:{port}");
    let failed = match StatusUpdateManagerClient::connect(plain).await {
        Err(_) => true,
        Ok(mut client) => client.list_streams(list()).await.is_err(),
    };
    assert!(failed, "a plaintext client was answered by a TLS server");
    running.shutdown().await.expect("a clean shutdown");
}

/// Runs the binary with `args` (no `SUM_…` variables but `env`) and waits for it, at most
/// `PROCESS_BOUND`.
fn run_cli(args: &[&str], env: &[(&str, &str)]) -> Finished {
    Proc::start(&args.join(" "), args, env).finish()
}

#[actix::test]
async fn the_cli_sends_the_token_from_a_flag_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write(dir.path(), "token", &format!("{TOKEN}\n"));
    let running = start(dir.path(), &[("SUM__SERVER__AUTH_TOKEN_FILE", &token_file)]).await;
    let url = format!("http://{}", running.local_addr);

    // The CLI blocks: run it off the runtime thread that serves it.
    let cli = |args: Vec<String>, env: Vec<(String, String)>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            run_cli(&args, &env)
        })
    };
    let args = |extra: &[&str]| {
        let mut all = vec!["streams".to_string(), "--server".into(), url.clone()];
        all.extend(extra.iter().map(|s| s.to_string()));
        all
    };

    let out = cli(args(&["--token-file", &token_file]), vec![])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "streams --token-file: {out:?}\n{}",
        &out.stderr
    );
    let env = vec![("SUM_TOKEN_FILE".to_string(), token_file.clone())];
    let out = cli(args(&[]), env).await.unwrap();
    assert!(out.status.success(), "streams with SUM_TOKEN_FILE: {out:?}");

    let out = cli(args(&[]), vec![]).await.unwrap();
    let stderr = &out.stderr;
    assert_eq!(
        out.status.code(),
        Some(1),
        "streams without a token: {stderr}"
    );
    assert!(stderr.starts_with("error: UNAUTHENTICATED: "), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");

    // An unreadable token file is a usage error, before any connection.
    let missing = dir.path().join("missing").display().to_string();
    let out = cli(args(&["--token-file", &missing]), vec![])
        .await
        .unwrap();
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&missing), "{stderr}");
    running.shutdown().await.expect("a clean shutdown");
}

#[test]
fn serve_refuses_a_public_address_without_protection() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data: PathBuf = data;
    let out = run_cli(
        &[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: invalid configuration: server.listen = \"0.0.0.0:0\": "),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing was created");
}
