// What the rental page (static/rental.js) takes from the bundle: its charts, the telemetry points it keeps, and
// the renter API signed by the browser wallet.
import { plots, TelemetryCharts, UsageChart } from "./charts.js";
import { AgentError, RenterSession, walletAccounts } from "./renterapi.js";
import { mergePoints } from "./telemetry.js";

window.gpuexRental = { plots, TelemetryCharts, UsageChart, AgentError, RenterSession, walletAccounts, mergePoints };
