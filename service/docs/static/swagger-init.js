"use strict";
// Swagger UI's configuration comes from the page's JSON data block (service/docs/interactive.py),
// so the page runs no inline script and its content security policy keeps script-src 'self'.
(function () {
  const config = JSON.parse(document.getElementById("swagger-ui-config").textContent);
  window.ui = SwaggerUIBundle({
    ...config,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
