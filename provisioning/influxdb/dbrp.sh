#!/bin/bash
# Runs once, when the InfluxDB 2.x container initialises its data: map the InfluxQL database
# "carnil" (retention policy "autogen") to the bucket, so Grafana's InfluxQL queries work.
set -euo pipefail
influx v1 dbrp create \
    --org "$DOCKER_INFLUXDB_INIT_ORG" \
    --token "$DOCKER_INFLUXDB_INIT_ADMIN_TOKEN" \
    --db "$DOCKER_INFLUXDB_INIT_BUCKET" --rp autogen --default \
    --bucket-id "$DOCKER_INFLUXDB_INIT_BUCKET_ID"
