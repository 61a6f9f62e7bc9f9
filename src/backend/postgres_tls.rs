//! TLS to PostgreSQL (feature `postgres`): libpq's `sslmode` and `sslrootcert` parameters,
//! read from the connection URL, on a rustls (ring) connector.
//!
//! The sync `postgres` client parses only `sslmode=disable|prefer|require` and refuses unknown
//! parameters, so [`split`] takes `sslmode` and `sslrootcert` out of the URL first and the
//! connector does what libpq does for each mode:
//! - no `sslmode` (or `disable`): plain TCP, as before (a loopback or trusted network);
//! - `prefer`: TLS when the server offers it, plain otherwise; the certificate is not checked;
//! - `require`: TLS or no connection; the certificate is checked against `sslrootcert` when
//!   one is given (as `verify-ca`), otherwise not (encryption without authentication);
//! - `verify-ca`: TLS, the chain checked against `sslrootcert`, any host name;
//! - `verify-full`: TLS, the chain checked against `sslrootcert` and the host name (or IP
//!   address) of the URL against the certificate.
//!
//! `sslrootcert` is a PEM file of CA certificates; without it, `verify-ca` and `verify-full`
//! read `~/.postgresql/root.crt` as libpq does, and fail clearly when it is not there.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Result};

/// libpq's `sslmode` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(v: &str) -> Result<Self> {
        Ok(match v {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(Error::invalid(
                    "postgres url",
                    format!(
                        "sslmode={other:?} is not known; use disable, prefer, require, \
                         verify-ca or verify-full"
                    ),
                ))
            }
        })
    }

    /// The name, for messages.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// What the URL asked for: the mode and the CA file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsParams {
    pub(crate) mode: Option<SslMode>,
    pub(crate) root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL form
/// `postgres://...?sslmode=verify-full&sslrootcert=/path`, or the `key=value` form), returning
/// the string the `postgres` client parses and what they said.
pub(crate) fn split(url: &str) -> Result<(String, TlsParams)> {
    let mut params = TlsParams {
        mode: None,
        root_cert: None,
    };
    let mut take = |key: &str, value: &str| -> Result<bool> {
        match key {
            "sslmode" => params.mode = Some(SslMode::parse(value)?),
            "sslrootcert" => params.root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let v = percent_decode(v);
                    if !take(k, &v)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        // `host=... sslmode=...`: values of these two keys hold no spaces or quotes here.
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            let taken = match word.split_once('=') {
                Some((k, v)) => take(k.trim(), v.trim_matches('\''))?,
                None => false,
            };
            if !taken {
                kept.push(word);
            }
        }
        kept.join(" ")
    };
    Ok((rest, params))
}

/// `%XX` escapes of a URL query value (a path such as `/tmp/my%20ca.pem`).
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A rustls connector for the `postgres` client, built once per backend.
#[derive(Clone)]
pub(crate) struct Tls {
    config: Arc<rustls::ClientConfig>,
    /// For messages: the mode and the CA file.
    pub(crate) describe: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl Tls {
    /// The connector for `params`, or `None` for plain connections. Reads the CA file now, so
    /// a missing or unreadable one is an error at open, not at the first query.
    pub(crate) fn new(params: &TlsParams) -> Result<Option<Tls>> {
        let mode = match params.mode {
            None | Some(SslMode::Disable) => return Ok(None),
            Some(m) => m,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let root_file = match (&params.root_cert, mode) {
            (Some(p), _) => Some(p.clone()),
            (None, SslMode::VerifyCa | SslMode::VerifyFull) => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                let default = home.map(|h| h.join(".postgresql").join("root.crt"));
                match default.filter(|p| p.is_file()) {
                    Some(p) => Some(p),
                    None => {
                        return Err(Error::invalid(
                            "postgres url",
                            format!(
                                "sslmode={} checks the server's certificate against a CA, \
                                 and none was given: add sslrootcert=/path/to/ca.pem (a PEM \
                                 file of CA certificates) or put it at ~/.postgresql/root.crt",
                                mode.as_str()
                            ),
                        ))
                    }
                }
            }
            (None, _) => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match &root_file {
            None => Arc::new(NoVerify(provider.clone())),
            Some(path) => {
                let roots = read_roots(path)?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| {
                            Error::invalid(
                                "sslrootcert",
                                format!(
                                    "{}: {e}; give a PEM file of CA certificates",
                                    path.display()
                                ),
                            )
                        })?;
                Arc::new(Verify {
                    inner: webpki,
                    check_name: mode == SslMode::VerifyFull,
                })
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Backend {
                message: format!("TLS to PostgreSQL: {e}"),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let describe = match &root_file {
            Some(p) => format!("sslmode={} sslrootcert={}", mode.as_str(), p.display()),
            None => format!("sslmode={} (certificate not checked)", mode.as_str()),
        };
        Ok(Some(Tls {
            config: Arc::new(config),
            describe,
        }))
    }
}

/// The CA certificates of a PEM file.
fn read_roots(path: &Path) -> Result<RootCertStore> {
    let bad = |m: String| Error::invalid("sslrootcert", format!("{}: {m}", path.display()));
    let mut roots = RootCertStore::empty();
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| {
        bad(format!(
            "{e}; give a readable PEM file of CA certificates (sslrootcert=/path/to/ca.pem)"
        ))
    })?;
    for cert in iter {
        let cert = cert.map_err(|e| bad(format!("{e}; the file is not valid PEM")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("a certificate in it cannot be used as a CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad(
            "it holds no certificate (-----BEGIN CERTIFICATE-----); give the CA's PEM file".into(),
        ));
    }
    Ok(roots)
}

/// `verify-ca` / `verify-full`: the chain against the CA file; the name only for `verify-full`.
#[derive(Debug)]
struct Verify {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for Verify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `prefer` / `require` without a CA: encryption, no authentication of the server (libpq's
/// behaviour for these modes). The handshake's signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        let name = ServerName::try_from(domain.to_string()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{domain:?} is not a valid TLS server name: {e}"),
            )
        })?;
        Ok(Connect {
            config: self.config.clone(),
            name,
        })
    }
}

/// One TLS handshake to one host.
pub(crate) struct Connect {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let s = connector.connect(self.name, stream).await?;
            Ok(TlsStream(s))
        })
    }
}

/// A TLS connection to PostgreSQL.
pub(crate) struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> postgres::tls::TlsStream for TlsStream<S> {
    /// No `tls-server-end-point` binding: SCRAM authenticates without channel binding
    /// (`SCRAM-SHA-256`, not `-PLUS`), as with libpq's `channel_binding=prefer` on a server
    /// that does not insist.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_parameters_are_taken_out_of_both_url_forms() {
        let (rest, p) = split(
            "postgres://u@h:5/db?sslmode=verify-full&sslrootcert=/a%20b/ca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h:5/db?application_name=x");
        assert_eq!(p.mode, Some(SslMode::VerifyFull));
        assert_eq!(p.root_cert, Some(PathBuf::from("/a b/ca.pem")));
        let (rest, p) = split("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), p.mode),
            ("postgres://u@h/db", Some(SslMode::Require))
        );
        let (rest, p) = split("postgres://u@h/db").unwrap();
        assert_eq!((rest.as_str(), p.mode), ("postgres://u@h/db", None));
        let (rest, p) = split("host=h user=u sslmode=verify-ca sslrootcert='/c.pem'").unwrap();
        assert_eq!(rest, "host=h user=u");
        assert_eq!(p.mode, Some(SslMode::VerifyCa));
        assert_eq!(p.root_cert, Some(PathBuf::from("/c.pem")));
        let e = split("postgres://h/db?sslmode=verify_full")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("verify-full") && e.contains("verify_full"),
            "{e}"
        );
    }

    #[test]
    fn plain_is_the_default_and_verification_needs_a_ca() {
        let p = |mode, root: Option<&str>| TlsParams {
            mode,
            root_cert: root.map(PathBuf::from),
        };
        assert!(Tls::new(&p(None, None)).unwrap().is_none());
        assert!(Tls::new(&p(Some(SslMode::Disable), None))
            .unwrap()
            .is_none());
        let t = Tls::new(&p(Some(SslMode::Require), None)).unwrap().unwrap();
        assert!(t.describe.contains("not checked"), "{}", t.describe);
        let e = Tls::new(&p(Some(SslMode::VerifyFull), Some("/nonexistent/ca.pem")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("sslrootcert"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Tls::new(&p(Some(SslMode::VerifyCa), empty.to_str()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no certificate"), "{e}");
    }
}
