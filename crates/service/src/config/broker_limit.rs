//! The largest message RabbitMQ takes (`RELAY_BROKER_MAX_MESSAGE`), and the settings that must
//! stay under it.
//!
//! RabbitMQ answers a message over its `max_message_size` by closing the channel it came on
//! (PRECONDITION_FAILED). The relay's channels are shared by the receiver and the worker, so the
//! publisher refuses such a message itself, before sending it; for that it must know the limit.
//! RabbitMQ 4.0 lowered the default from 128 MiB to 16 MiB, which a record of a large
//! conversation can pass, so the relay's default is 4.x's.

use super::{values, AmqpTarget, ConfigError};

/// The most RabbitMQ's `max_message_size` can be set to (512 MiB): a larger value is a mistake.
pub const BROKER_CEILING: usize = 512 << 20;

/// clap value parser for `RELAY_BROKER_MAX_MESSAGE`: a size, no more than any broker takes.
pub(super) fn max_message(text: &str) -> Result<usize, String> {
    let size = values::parse_size(text).map_err(|e| format!("RELAY_BROKER_MAX_MESSAGE: {e}"))?;
    if size > BROKER_CEILING {
        return Err(format!(
            "RELAY_BROKER_MAX_MESSAGE: `{}` is more than RabbitMQ takes at all (512MiB); set it to the broker's max_message_size",
            text.trim()
        ));
    }
    Ok(size)
}

/// Refuses a receiver whose largest webhook (`RELAY_MAX_BODY`) the broker would refuse: the raw
/// event's body is the webhook's, byte for byte. The embedded queue (`amqp` is `None`) has no limit.
pub fn check_body_fits(amqp: Option<&AmqpTarget>, max_body: usize) -> Result<(), ConfigError> {
    match amqp {
        Some(target) if max_body > target.max_message => Err(ConfigError::new(
            "RELAY_MAX_BODY",
            format!(
                "RELAY_MAX_BODY ({max_body} bytes) is larger than RELAY_BROKER_MAX_MESSAGE ({} bytes): RabbitMQ \
                 would refuse the largest webhooks; lower RELAY_MAX_BODY, or raise RELAY_BROKER_MAX_MESSAGE together \
                 with the broker's max_message_size",
                target.max_message
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;
    use crate::config::defaults;

    fn target(max_message: usize) -> AmqpTarget {
        AmqpTarget { max_message, ..AmqpTarget::single(SecretString::from("amqp://u:p@h/%2f")) }
    }

    #[test]
    fn the_broker_limit_defaults_to_rabbitmq_4s_16_mib() {
        assert_eq!(max_message(defaults::BROKER_MAX_MESSAGE), Ok(16 << 20));
        assert_eq!(AmqpTarget::single(SecretString::from("amqp://h")).max_message, 16 << 20);
    }

    #[test]
    fn the_broker_limit_is_a_size_like_the_others() {
        assert_eq!(max_message("64KiB"), Ok(64 << 10));
        assert_eq!(max_message("128MiB"), Ok(128 << 20));
        assert_eq!(max_message("512MiB"), Ok(BROKER_CEILING));
    }

    #[test]
    fn a_broker_limit_that_is_no_size_or_more_than_rabbitmq_takes_is_refused_naming_the_variable() {
        for text in ["0", "lots", "", "1GiB", "536870913"] {
            let error = max_message(text).expect_err(text);
            assert!(error.starts_with("RELAY_BROKER_MAX_MESSAGE: "), "{text}: {error}");
        }
        assert!(max_message("1GiB").unwrap_err().contains("512MiB"));
    }

    #[test]
    fn webhooks_larger_than_the_broker_takes_are_refused_at_start_up() {
        let error = check_body_fits(Some(&target(64 << 10)), 1 << 20).unwrap_err().to_string();
        assert!(error.contains("RELAY_MAX_BODY") && error.contains("RELAY_BROKER_MAX_MESSAGE"), "{error}");
        assert!(error.contains("max_message_size"), "{error}");
    }

    #[test]
    fn webhooks_up_to_the_broker_limit_or_on_the_embedded_queue_are_fine() {
        assert!(check_body_fits(Some(&target(1 << 20)), 1 << 20).is_ok());
        assert!(check_body_fits(None, 1 << 30).is_ok());
    }
}
