"""The operators' console: static pages (``index.html``, ``app.js``, ``style.css`` and the
vendored uPlot charts under ``vendor/``) served at ``/console/``; they call the JSON admin
API with the admin key the operator types in, kept in the tab's sessionStorage only."""
