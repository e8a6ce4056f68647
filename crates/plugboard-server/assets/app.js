// Placeholder: the dashboard replaces this file (keep its name).
// The API it talks to is described at /api/openapi.json.
"use strict";
