# tencent2mqtt: the bridge as a container. Configure with a mounted file
# (-v ./tencent2mqtt.toml:/config/tencent2mqtt.toml) or TENCENT2MQTT_* variables;
# secrets can come from Docker secrets via TENCENT2MQTT_<SECTION>__<KEY>_FILE.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 bridge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config/tencent2mqtt.example.toml /config/tencent2mqtt.example.toml
ENV TENCENT2MQTT_CONFIG=/config/tencent2mqtt.toml \
    TENCENT2MQTT_HTTP__LISTEN=0.0.0.0:9100 \
    PYTHONUNBUFFERED=1
RUN touch /config/tencent2mqtt.toml && chown -R bridge /config
USER bridge
EXPOSE 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["tencent2mqtt"]
CMD ["run"]
