"""queue_message: PostgreSQL notifies idle consumers of new messages

Revision ID: 0015_queue_notify
Revises: 0014_emulator_jurisdiction
Create Date: 2026-12-01 08:00:00

After every INSERT into `queue_message`, `pg_notify` on the channel
`jobgate_queue_message` with the payload `<schema>:<queue>`, once per queue the statement
wrote to. PostgreSQL delivers a notification only when its transaction commits (and merges
duplicates of one transaction), so an idle consumer (`app.consumer.wakeup`) pulls as soon as
new work is visible instead of at its next idle poll. SQLite needs nothing: the consumer
watches its write-ahead log file.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015_queue_notify"
down_revision: str | None = "0014_emulator_jurisdiction"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION queue_message_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('jobgate_queue_message', TG_TABLE_SCHEMA || ':' || queue)
            FROM (SELECT DISTINCT queue FROM inserted) AS queues;
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER queue_message_notify AFTER INSERT ON queue_message "
        "REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT "
        "EXECUTE FUNCTION queue_message_notify()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER queue_message_notify ON queue_message")
    op.execute("DROP FUNCTION queue_message_notify()")
