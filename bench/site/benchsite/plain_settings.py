"""Settings with no apps and no database, for serving plain.application with safefcgi."""

SECRET_KEY = "benchmark-only"
INSTALLED_APPS = []
DATABASES = {}
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "benchsite.plain_urls"
USE_TZ = True
