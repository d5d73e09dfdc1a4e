# One image for every role: web (`python app.py --no-workers`), workers (`celery -A tasks worker -Q ...`), flower.
FROM python:3.11-slim
WORKDIR /app
# OpenCV (opencv-python, which insightface asks for) needs libGL and glib.
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
# rembg's first import compiles numba code (about a minute): once here, not in the first job.
RUN python -c "import rembg"
COPY . .
ENV ATELIER_DATA_DIR=/data ATELIER_MODELS_DIR=/models PYTHONUNBUFFERED=1
EXPOSE 7860
# The command runs as PID 1 (exec form, no shell in between) and gets docker stop's SIGTERM itself:
# it stops within ATELIER_STOP_TIMEOUT (8 s), inside docker's default 10 s grace period.
STOPSIGNAL SIGTERM
CMD ["python", "app.py", "--host", "0.0.0.0"]
