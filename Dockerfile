# The Kairos daemon. Build: docker build -t kairos .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Profile-guided (tools/build-pgo.sh): the same code, laid out by a training run's counts.
RUN bash tools/build-pgo.sh

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/kairos kairos && mkdir -p /var/lib/kairos && chown kairos /var/lib/kairos
COPY --from=build /src/target/pgo/release/kairos /usr/local/bin/kairos
COPY patterns /etc/kairos/patterns
COPY config/docker.toml /etc/kairos/kairos.toml
USER kairos
WORKDIR /var/lib/kairos
EXPOSE 9464
ENTRYPOINT ["kairos"]
CMD ["run", "--config", "/etc/kairos/kairos.toml"]
