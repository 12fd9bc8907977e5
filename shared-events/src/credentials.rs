//! Credentials for the brokers and the registry. They come from configuration (in
//! Kubernetes, Secrets mapped to environment variables), never from the repository or an
//! image, and never reach a log: [`Secret`] prints as `***`.

use std::fmt;
use std::str::FromStr;

use rdkafka::ClientConfig;

/// A value that must not be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the clients talk to the brokers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no authentication: a local or private-network broker.
    #[default]
    Plaintext,
    /// TLS, no SASL (or mutual TLS).
    Ssl,
    /// SASL authentication without TLS.
    SaslPlaintext,
    /// TLS and SASL: managed Kafka (Confluent Cloud, MSK, Aiven, Strimzi with SCRAM).
    SaslSsl,
}

impl SecurityProtocol {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// The SASL mechanisms a managed Kafka offers for a username and password.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    /// Confluent Cloud's API key and secret.
    #[default]
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// Strimzi's and MSK's SCRAM users.
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS and SASL settings of every Kafka client.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KafkaSecurity {
    /// `plaintext`, `ssl`, `sasl-plaintext` or `sasl-ssl` (managed Kafka).
    #[arg(
        id = "kafka_security_protocol",
        long = "kafka-security-protocol",
        env = "KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value_t
    )]
    pub protocol: SecurityProtocol,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, with a SASL protocol.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "KAFKA_SASL_MECHANISM",
        value_enum,
        default_value_t
    )]
    pub sasl_mechanism: SaslMechanism,
    /// SASL username (Confluent Cloud: the API key); needed with a SASL protocol.
    #[arg(
        long = "kafka-sasl-username",
        env = "KAFKA_SASL_USERNAME",
        required_if_eq_any = [("kafka_security_protocol", "sasl-ssl"), ("kafka_security_protocol", "sasl-plaintext")]
    )]
    pub sasl_username: Option<String>,
    /// SASL password (Confluent Cloud: the API secret); from a Secret, never a file in git.
    #[arg(
        long = "kafka-sasl-password",
        env = "KAFKA_SASL_PASSWORD",
        hide_env_values = true,
        required_if_eq_any = [("kafka_security_protocol", "sasl-ssl"), ("kafka_security_protocol", "sasl-plaintext")]
    )]
    pub sasl_password: Option<Secret>,
    /// PEM file of the CA that signed the brokers' certificates; the system's CAs if unset.
    #[arg(long = "kafka-ssl-ca-location", env = "KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<String>,
}

impl KafkaSecurity {
    /// Sets librdkafka's `security.protocol` and, as needed, its SASL and TLS properties.
    pub fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol.as_librdkafka());
        if self.protocol.uses_sasl() {
            config.set("sasl.mechanism", self.sasl_mechanism.as_librdkafka());
            if let Some(username) = &self.sasl_username {
                config.set("sasl.username", username);
            }
            if let Some(password) = &self.sasl_password {
                config.set("sasl.password", password.expose());
            }
        }
        if let Some(ca) = &self.ssl_ca_location {
            config.set("ssl.ca.location", ca);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        security: KafkaSecurity,
    }

    #[test]
    fn a_managed_kafka_gets_tls_sasl_and_its_credentials() {
        let cli = Cli::try_parse_from([
            "test",
            "--kafka-security-protocol",
            "sasl-ssl",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-sasl-username",
            "orderflow",
            "--kafka-sasl-password",
            "s3cret",
        ])
        .unwrap();
        let mut config = ClientConfig::new();
        cli.security.apply(&mut config);
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("orderflow"));
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert!(!format!("{:?}", cli.security).contains("s3cret"));
    }

    #[test]
    fn a_sasl_protocol_without_credentials_is_refused_at_start() {
        let error = Cli::try_parse_from(["test", "--kafka-security-protocol", "sasl-ssl"])
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("--kafka-sasl-username"), "{error}");
    }

    #[test]
    fn plaintext_sets_no_sasl() {
        let cli = Cli::try_parse_from(["test"]).unwrap();
        let mut config = ClientConfig::new();
        cli.security.apply(&mut config);
        assert_eq!(config.get("security.protocol"), Some("plaintext"));
        assert_eq!(config.get("sasl.mechanism"), None);
    }
}
