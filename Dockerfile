# One image for every tillstream binary (the service to run is the container's command).
# Build: docker build -t tillstream:dev .
# Run:   docker run tillstream:dev tillstream-dedup --config /etc/tillstream/dedup.toml
FROM rust:1.95-bookworm AS build
WORKDIR /src
# cmake for librdkafka; libssl-dev and pkg-config for its TLS and SASL (SCRAM) support.
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked \
      -p tillstream-store-bridge -p tillstream-dedup -p tillstream-inventory-projection \
      -p tillstream-schema-registry -p tillctl -p tillstream-sim -p tillstream-conflict-detector \
      -p tillstream-finance-export \
 && mkdir /out \
 && cp target/release/tillstream-store-bridge target/release/tillstream-dedup \
       target/release/tillstream-inventory-projection target/release/tillstream-schema-registry \
       target/release/tillctl target/release/tillstream-sim \
       target/release/tillstream-conflict-detector target/release/tillstream-finance-export /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/tillstream --create-home tillstream
COPY --from=build /out/ /usr/local/bin/
COPY schemas /usr/share/tillstream/schemas
COPY topology /usr/share/tillstream/topology
USER tillstream
WORKDIR /var/lib/tillstream
ENV TILLSTREAM_LOG_FORMAT=json
