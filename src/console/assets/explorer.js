// Starts Swagger UI over /openapi.json. A file of its own, not an inline script, so the page
// runs under a CSP without 'unsafe-inline'. The bearer token typed into "Authorize" stays in
// this page's memory: persistAuthorization is off (it would write the token to localStorage).
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  window.ui = window.SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#explorer",
    deepLinking: false,
    persistAuthorization: false,
    tryItOutEnabled: true,
    displayRequestDuration: true,
    // No call to the public validator: the explorer works offline.
    validatorUrl: null,
    defaultModelsExpandDepth: 0,
  });
});
