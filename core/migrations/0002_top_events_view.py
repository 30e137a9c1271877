"""The materialized view behind GET /events/top/, refreshed by Celery beat."""

import django.db.models.deletion
from django.db import migrations, models

CREATE = """
CREATE MATERIALIZED VIEW core_top_events AS
SELECT
    e.id AS event_id,
    e.name,
    e.date,
    COALESCE(s.sold, 0)::integer AS tickets_sold,
    rank() OVER (ORDER BY COALESCE(s.sold, 0) DESC)::integer AS rank,
    now() AS refreshed_at
FROM core_event e
LEFT JOIN (
    SELECT event_id, sum(quantity) AS sold FROM core_ticket GROUP BY event_id
) s ON s.event_id = e.id
WHERE e.date >= now()
WITH DATA;
CREATE UNIQUE INDEX core_top_events_event_id_uniq ON core_top_events (event_id);
CREATE INDEX core_top_events_rank_idx ON core_top_events (rank, date, event_id);
"""

DROP = "DROP MATERIALIZED VIEW IF EXISTS core_top_events;"


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [
        migrations.RunSQL(CREATE, DROP),
        migrations.CreateModel(
            name="TopEvent",
            fields=[
                (
                    "event",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="core.event",
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("date", models.DateTimeField()),
                ("tickets_sold", models.IntegerField()),
                ("rank", models.IntegerField()),
                ("refreshed_at", models.DateTimeField()),
            ],
            options={
                "db_table": "core_top_events",
                "ordering": ["rank", "date", "event_id"],
                "managed": False,
            },
        ),
    ]
