//! The outside hosts' TLS service (`https: [443]`) and the probe's TLS client: a real TLS
//! handshake (rustls, certificate made at start with rcgen), after which the server answers
//! with the peer's address and the server name the client asked for, so a probe shows both
//! what the network did to its source and which name got through.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection, StreamOwned,
};

/// ring, not aws-lc-rs (rustls' default), which needs a C toolchain and cmake to build; the
/// lab's TLS carries no secrets, so ring's lack of post-quantum key exchange does not matter.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's configuration: one self-signed certificate, handed out whatever name the
/// client asks for (the lab checks names, not certificates).
pub fn server_config() -> Result<Arc<ServerConfig>, String> {
    let key = rcgen::KeyPair::generate().map_err(|error| format!("a TLS key: {error}"))?;
    let certificate = rcgen::CertificateParams::new(vec!["sluice-lab.invalid".to_string()])
        .and_then(|parameters| parameters.self_signed(&key))
        .map_err(|error| format!("a TLS certificate: {error}"))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(vec![certificate.der().clone()], key)
        })
        .map(Arc::new)
        .map_err(|error| format!("the TLS server configuration: {error}"))
}

/// Completes the handshake on an accepted connection and answers `<peer address> <server
/// name or ->`; returns the server name asked for.
pub fn answer(stream: TcpStream, config: Arc<ServerConfig>, seen: IpAddr) -> std::io::Result<Option<String>> {
    // Handshake flights are several small writes: without NODELAY, Nagle and delayed ACKs
    // add tens of milliseconds to every handshake.
    stream.set_nodelay(true)?;
    let connection = ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(connection, stream);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let name = tls.conn.server_name().map(str::to_string);
    let line = format!("{seen} {}\n", name.as_deref().unwrap_or("-"));
    tls.write_all(line.as_bytes())?;
    tls.conn.send_close_notify();
    tls.flush()?;
    let _ = tls.conn.complete_io(&mut tls.sock);
    Ok(name)
}

/// Accepts connections on `listener` and answers each on a thread of its own; `record` is
/// told of each connection.
pub fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    record: impl Fn(String) + Send + Sync + 'static,
) {
    let record = Arc::new(record);
    let port = listener
        .local_addr()
        .map(|address| address.port())
        .unwrap_or_default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (config, record) = (config.clone(), record.clone());
        std::thread::spawn(move || {
            let Ok(peer) = stream.peer_addr() else { return };
            let timeout = Some(Duration::from_secs(2));
            let _ = stream.set_read_timeout(timeout);
            let _ = stream.set_write_timeout(timeout);
            match answer(stream, config, peer.ip().to_canonical()) {
                Ok(name) => record(format!(
                    "https {port} from {peer} server name {}",
                    name.as_deref().unwrap_or("-")
                )),
                Err(error) => record(format!("https {port} from {peer} failed: {error}")),
            }
        });
    }
}

/// Accepts any certificate: the lab's client checks what the network lets through, not who
/// the server is.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS handshake to `address` naming `server_name` (without one, the hello carries no
/// server name), then the server's answer: `<address it saw> <name it was asked for>`.
pub fn handshake(
    address: SocketAddr,
    server_name: Option<&str>,
    timeout: Duration,
) -> std::io::Result<String> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.enable_sni = server_name.is_some();
    // Without a name to send, the address stands in (rustls sends no SNI for an address).
    let name = match server_name {
        Some(name) => ServerName::try_from(name.to_string()).map_err(std::io::Error::other)?,
        None => ServerName::IpAddress(address.ip().into()),
    };
    let connection = ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut tls = StreamOwned::new(connection, stream);
    let mut answer = String::new();
    match tls.read_to_string(&mut answer) {
        Ok(_) => Ok(answer),
        // The server's answer came; a close without close_notify after it is fine.
        Err(_) if answer.ends_with('\n') => Ok(answer),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_reports_the_name_it_was_asked_for() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let config = server_config().unwrap();
        std::thread::spawn(move || serve(listener, config, |_| {}));
        let timeout = Duration::from_secs(5);
        assert_eq!(
            handshake(address, Some("api.partner.example"), timeout).unwrap(),
            "127.0.0.1 api.partner.example\n"
        );
        assert_eq!(handshake(address, None, timeout).unwrap(), "127.0.0.1 -\n");
    }
}
