//! Every CQL statement the store runs, prepared once at connect with the configured
//! consistency (lightweight transactions with `LOCAL_SERIAL` for their compare phase).

use super::unavailable;
use crate::Result;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

macro_rules! statements {
    ($($name:ident = $cql:expr;)*) => {
        pub(super) struct Statements {
            $(pub(super) $name: PreparedStatement,)*
        }

        impl Statements {
            pub(super) async fn prepare(session: &Session, consistency: Consistency) -> Result<Self> {
                Ok(Self {
                    $($name: {
                        let mut st = session.prepare($cql).await.map_err(|e| unavailable(concat!("preparing ", stringify!($name)), e))?;
                        st.set_consistency(consistency);
                        st.set_serial_consistency(Some(SerialConsistency::LocalSerial));
                        st
                    },)*
                })
            }
        }
    };
}

statements! {
    ping = "SELECT version FROM schema_migrations LIMIT 1";

    put_tenant = "INSERT INTO tenants (id, body) VALUES (?, ?)";
    get_tenant = "SELECT body FROM tenants WHERE id = ?";
    list_tenants = "SELECT body FROM tenants";

    put_template = "INSERT INTO templates (tenant, id, body) VALUES (?, ?, ?)";
    get_template = "SELECT body FROM templates WHERE tenant = ? AND id = ?";
    list_templates = "SELECT body FROM templates WHERE tenant = ?";
    delete_template = "DELETE FROM templates WHERE tenant = ? AND id = ?";
    purge_templates = "DELETE FROM templates WHERE tenant = ?";

    put_suppression = "INSERT INTO suppressions (tenant, address, added_ms) VALUES (?, ?, ?)";
    get_suppression = "SELECT address FROM suppressions WHERE tenant = ? AND address = ?";
    find_suppressions = "SELECT address FROM suppressions WHERE tenant = ? AND address IN ?";
    any_suppression = "SELECT address FROM suppressions WHERE tenant = ? LIMIT 1";
    delete_suppression = "DELETE FROM suppressions WHERE tenant = ? AND address = ?";
    list_suppressions = "SELECT address FROM suppressions WHERE tenant = ? LIMIT ?";
    list_suppressions_after = "SELECT address FROM suppressions WHERE tenant = ? AND address > ? LIMIT ?";
    purge_suppressions = "DELETE FROM suppressions WHERE tenant = ?";

    put_campaign = "INSERT INTO campaigns (tenant, id, version, body) VALUES (?, ?, ?, ?)";
    update_campaign = "UPDATE campaigns SET version = ?, body = ? WHERE tenant = ? AND id = ? IF version = ?";
    get_campaign = "SELECT body FROM campaigns WHERE tenant = ? AND id = ?";
    list_campaigns = "SELECT body FROM campaigns WHERE tenant = ?";
    purge_campaigns = "DELETE FROM campaigns WHERE tenant = ?";

    put_provider = "INSERT INTO providers (tenant, kind, body) VALUES (?, ?, ?)";
    get_provider = "SELECT body FROM providers WHERE tenant = ? AND kind = ?";
    delete_provider = "DELETE FROM providers WHERE tenant = ? AND kind = ?";
    claim_sender = "INSERT INTO provider_senders (kind, sender, tenant) VALUES (?, ?, ?) IF NOT EXISTS";
    get_sender = "SELECT tenant FROM provider_senders WHERE kind = ? AND sender = ?";
    release_sender = "DELETE FROM provider_senders WHERE kind = ? AND sender = ? IF tenant = ?";
    put_verify_token = "INSERT INTO verify_tokens (token, tenant) VALUES (?, ?)";
    get_verify_token = "SELECT tenant FROM verify_tokens WHERE token = ?";
    delete_verify_token = "DELETE FROM verify_tokens WHERE token = ?";

    put_audience = "INSERT INTO audiences (tenant, id, body) VALUES (?, ?, ?)";
    get_audience = "SELECT body FROM audiences WHERE tenant = ? AND id = ?";
    list_audiences = "SELECT body FROM audiences WHERE tenant = ?";
    purge_audiences = "DELETE FROM audiences WHERE tenant = ?";
    put_recipient = "INSERT INTO recipients (tenant, audience, bucket, id, address, attrs) VALUES (?, ?, ?, ?, ?, ?)";
    read_recipients = "SELECT id, address, attrs FROM recipients WHERE tenant = ? AND audience = ? AND bucket = ? AND id >= ? LIMIT ?";
    purge_recipients = "DELETE FROM recipients WHERE tenant = ? AND audience = ? AND bucket = ?";
    put_address = "INSERT INTO recipient_addresses (tenant, audience, shard, address, id) VALUES (?, ?, ?, ?, ?)";
    find_addresses = "SELECT address FROM recipient_addresses WHERE tenant = ? AND audience = ? AND shard = ? AND address IN ?";
    purge_addresses = "DELETE FROM recipient_addresses WHERE tenant = ? AND audience = ? AND shard = ?";

    get_checkpoint = "SELECT body FROM checkpoints WHERE tenant = ? AND campaign = ?";
    put_checkpoint = "INSERT INTO checkpoints (tenant, campaign, body) VALUES (?, ?, ?)";
    purge_checkpoint = "DELETE FROM checkpoints WHERE tenant = ? AND campaign = ?";

    put_message = "INSERT INTO messages (tenant, campaign, bucket, id, body) VALUES (?, ?, ?, ?, ?) USING TTL ?";
    get_message = "SELECT body FROM messages WHERE tenant = ? AND campaign = ? AND bucket = ? AND id = ?";
    scan_messages = "SELECT id, body FROM messages WHERE tenant = ? AND campaign = ? AND bucket = ? AND id > ? LIMIT ?";
    purge_messages = "DELETE FROM messages WHERE tenant = ? AND campaign = ? AND bucket = ?";
    put_bucket = "INSERT INTO message_buckets (tenant, campaign, bucket) VALUES (?, ?, ?) USING TTL ?";
    list_buckets = "SELECT bucket FROM message_buckets WHERE tenant = ? AND campaign = ?";
    purge_buckets = "DELETE FROM message_buckets WHERE tenant = ? AND campaign = ?";
    put_log_campaign = "INSERT INTO log_campaigns (tenant, campaign) VALUES (?, ?)";
    list_log_campaigns = "SELECT campaign FROM log_campaigns WHERE tenant = ?";
    purge_log_campaigns = "DELETE FROM log_campaigns WHERE tenant = ?";
    put_provider_id = "INSERT INTO provider_ids (tenant, shard, provider, provider_id, message) VALUES (?, ?, ?, ?, ?) USING TTL ?";
    get_provider_id = "SELECT message FROM provider_ids WHERE tenant = ? AND shard = ? AND provider = ? AND provider_id = ?";
    purge_provider_ids = "DELETE FROM provider_ids WHERE tenant = ? AND shard = ?";
    put_counters = "INSERT INTO counters (tenant, campaign, body) VALUES (?, ?, ?)";
    get_counters = "SELECT body FROM counters WHERE tenant = ? AND campaign = ?";
    purge_counters = "DELETE FROM counters WHERE tenant = ? AND campaign = ?";
    put_timeline = "INSERT INTO campaign_timeline (tenant, campaign, at_ms, body) VALUES (?, ?, ?, ?) USING TTL ?";
    get_timeline = "SELECT at_ms, body FROM campaign_timeline WHERE tenant = ? AND campaign = ? AND at_ms > ? LIMIT ?";
    purge_timeline = "DELETE FROM campaign_timeline WHERE tenant = ? AND campaign = ?";
    put_journal = "INSERT INTO log_journal (tenant, campaign, id, body) VALUES (?, ?, ?, ?) USING TTL ?";
    get_journal = "SELECT id, body FROM log_journal WHERE tenant = ? AND campaign = ?";
    delete_journal = "DELETE FROM log_journal WHERE tenant = ? AND campaign = ? AND id = ?";
    purge_journal = "DELETE FROM log_journal WHERE tenant = ? AND campaign = ?";
    put_dlq = "INSERT INTO dlq (tenant, campaign, id, body) VALUES (?, ?, ?, ?)";
    delete_dlq = "DELETE FROM dlq WHERE tenant = ? AND campaign = ? AND id = ?";
    scan_dlq = "SELECT body FROM dlq WHERE tenant = ? AND campaign = ? AND id > ? LIMIT ?";
    purge_dlq = "DELETE FROM dlq WHERE tenant = ? AND campaign = ?";

    put_held = "INSERT INTO held (grp, part, lane, seq, due_ms, body) VALUES (?, ?, ?, ?, ?, ?)";
    peek_held = "SELECT seq, due_ms, body FROM held WHERE grp = ? AND part = ? AND lane = ? LIMIT ?";
    held_seqs_after = "SELECT seq FROM held WHERE grp = ? AND part = ? AND lane = ? AND seq > ?";
    release_held = "DELETE FROM held WHERE grp = ? AND part = ? AND lane = ? AND seq <= ?";
    put_held_lane = "INSERT INTO held_lanes (grp, part, lane, count, last_seq, first_due_ms) VALUES (?, ?, ?, ?, ?, ?)";
    get_held_lane = "SELECT count, last_seq, first_due_ms FROM held_lanes WHERE grp = ? AND part = ? AND lane = ?";
    delete_held_lane = "DELETE FROM held_lanes WHERE grp = ? AND part = ? AND lane = ?";
    held_lanes = "SELECT lane, count, last_seq, first_due_ms FROM held_lanes WHERE grp = ? AND part = ?";
}
