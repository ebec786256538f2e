# A small non-root image that runs the bot: `docker build -t whatsmate-bot .`
# Mount the config at /app/config.yaml and pass the secrets as environment variables.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY bot ./bot
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --user-group bot
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
USER 10001:10001
WORKDIR /home/bot
ENV PYTHONUNBUFFERED=1
STOPSIGNAL SIGTERM
ENTRYPOINT ["whatsmate-bot"]
CMD ["run", "--config", "/app/config.yaml"]
