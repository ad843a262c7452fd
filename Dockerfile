# CPU image of hf_mtl: installs exactly as .ci/run does, then serves the model mounted at /model by default.
#   docker build -t hf_mtl .
#   docker run --rm -p 8000:8000 -v "$PWD/outputs/demo:/model:ro" hf_mtl     # hf-mtl serve: http://127.0.0.1:8000
#   docker run --rm hf_mtl python run_mtl.py configs/demo.json                 # the offline demo instead
#   docker run --rm hf_mtl python -m pytest                                    # the test suite
FROM python:3.11-slim

WORKDIR /hf_mtl
COPY . .
RUN python -m pip install --quiet --upgrade pip
RUN python -m pip install --quiet torch==2.13.0
RUN python -m pip install --quiet -e ".[dev]"

ENV HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
EXPOSE 8000
# Exec form: `docker stop` sends SIGTERM to the server itself, which answers the requests in flight and exits 0.
CMD ["hf-mtl", "serve", "--model", "/model", "--host", "0.0.0.0", "--port", "8000"]
