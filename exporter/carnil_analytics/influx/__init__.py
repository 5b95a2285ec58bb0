"""The InfluxDB mirror: every recorded event shipped once, as one point, from the store."""
