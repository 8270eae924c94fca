<?php
/**
 * jobgate: sends thin, signed order and product events from PrestaShop to a jobgate gateway.
 *
 * PHP 7.2+ and PrestaShop 1.7 / 8 / 9. Events are Standard Webhooks (webhook-id,
 * webhook-timestamp, webhook-signature) signed with this shop's secret; the gateway
 * re-fetches the truth from the shop's Webservice, so payloads carry ids and state only.
 *
 * The customer never waits for the gateway: a hook only INSERTs the event into the module's
 * table (coalesced per request: a product save fires many hooks). Under PHP-FPM the events
 * are sent after the response has been handed back (fastcgi_finish_request); elsewhere, and
 * for every retry, the cron controller sends a bounded batch per run.
 */
if (!defined('_PS_VERSION_')) {
    exit;
}

require_once __DIR__ . '/classes/JobgateSigner.php';
require_once __DIR__ . '/classes/JobgateClient.php';
require_once __DIR__ . '/classes/JobgateOutbox.php';

class Jobgate extends Module
{
    const CONFIG_URL = 'JOBGATE_GATEWAY_URL';
    const CONFIG_TENANT = 'JOBGATE_TENANT_ID';
    const CONFIG_SECRET = 'JOBGATE_SECRET';
    const CONFIG_SECRET_NEXT = 'JOBGATE_SECRET_NEXT';
    const CONFIG_SITE = 'JOBGATE_SITE_ID';
    /** Same default as `jobgate shops set --site-id`. */
    const DEFAULT_SITE_ID = 'default';
    /** Events one cron run sends at most (the rest waits for the next run). */
    const CRON_BATCH = 50;

    /** @var array<string, int> this request's events: "type:id" => row id */
    private static $pending = array();
    /** @var bool */
    private static $senderRegistered = false;

    /** @var string[] */
    private $hooks = array(
        'actionValidateOrder',
        'actionOrderStatusPostUpdate',
        'actionObjectProductAddAfter',
        'actionProductUpdate',
        'actionObjectProductUpdateAfter',
        'actionProductDelete',
    );

    public function __construct()
    {
        $this->name = 'jobgate';
        $this->tab = 'administration';
        $this->version = '1.1.0';
        $this->author = 'jobgate';
        $this->need_instance = 0;
        $this->bootstrap = true;
        $this->ps_versions_compliancy = array('min' => '1.7.0.0', 'max' => _PS_VERSION_);
        parent::__construct();
        $this->displayName = $this->l('jobgate events');
        $this->description = $this->l('Sends signed order and product events to a jobgate gateway.');
    }

    public function install()
    {
        return parent::install()
            && Db::getInstance()->execute(JobgateOutbox::createTableSql())
            && Configuration::updateValue(self::CONFIG_SITE, self::DEFAULT_SITE_ID)
            && $this->registerHook($this->hooks);
    }

    public function uninstall()
    {
        foreach (array(self::CONFIG_URL, self::CONFIG_TENANT, self::CONFIG_SECRET, self::CONFIG_SECRET_NEXT, self::CONFIG_SITE, 'JOBGATE_TIMEOUT_MS') as $key) {
            Configuration::deleteByName($key);
        }
        Db::getInstance()->execute(JobgateOutbox::dropTableSql());
        return parent::uninstall();
    }

    /* ---------------------------------------------------------------- hooks */

    public function hookActionValidateOrder($params)
    {
        if (isset($params['order']) && is_object($params['order'])) {
            $order = $params['order'];
            $this->queueEvent('order.created', 'id_order', (int) $order->id, array(
                'reference' => (string) $order->reference,
                'current_state' => (int) $order->current_state,
            ));
        }
    }

    public function hookActionOrderStatusPostUpdate($params)
    {
        if (!empty($params['id_order'])) {
            $state = isset($params['newOrderStatus']) && is_object($params['newOrderStatus'])
                ? (int) $params['newOrderStatus']->id : null;
            $this->queueEvent('order.status_changed', 'id_order', (int) $params['id_order'], array(
                'current_state' => $state,
            ));
        }
    }

    public function hookActionObjectProductAddAfter($params)
    {
        if (isset($params['object']) && is_object($params['object'])) {
            $this->queueEvent('product.created', 'id_product', (int) $params['object']->id);
        }
    }

    public function hookActionProductUpdate($params)
    {
        if (!empty($params['id_product'])) {
            $this->queueEvent('product.updated', 'id_product', (int) $params['id_product']);
        }
    }

    public function hookActionObjectProductUpdateAfter($params)
    {
        if (isset($params['object']) && is_object($params['object'])) {
            $this->queueEvent('product.updated', 'id_product', (int) $params['object']->id);
        }
    }

    public function hookActionProductDelete($params)
    {
        if (!empty($params['id_product'])) {
            $this->queueEvent('product.deleted', 'id_product', (int) $params['id_product']);
        }
    }

    /* --------------------------------------------------------------- events */

    /**
     * Store an event in the module table (inside the shop's request: one INSERT, no network).
     * One request stores each (type, object) once.
     */
    public function queueEvent($type, $idField, $objectId, array $extra = array())
    {
        if ($objectId < 1 || !$this->isConfigured()) {
            return;
        }
        $key = $type . ':' . $objectId;
        if (isset(self::$pending[$key])) {
            return;
        }
        $event = array(
            'type' => $type,
            'shop' => $this->shopRef(),
            'data' => array_merge(array($idField => $objectId), $extra),
            'occurred_at' => gmdate('Y-m-d\TH:i:s\Z'),
        );
        $body = json_encode($event, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
        if (!is_string($body)) {
            return;
        }
        try {
            self::$pending[$key] = $this->outbox()->add(JobgateSigner::newMessageId(), $body);
        } catch (Exception $e) {
            // Losing one event beats failing the customer's checkout.
            PrestaShopLogger::addLog('jobgate: could not store an event: ' . get_class($e), 2, null, 'Module', (int) $this->id);
            return;
        }
        if (!self::$senderRegistered && function_exists('fastcgi_finish_request')) {
            self::$senderRegistered = true;
            register_shutdown_function(array($this, 'sendAfterResponse'));
        }
    }

    /**
     * Shutdown function under PHP-FPM: hand the response to the customer first, then send this
     * request's events. Without FPM nothing is sent here; the cron controller does it.
     */
    public function sendAfterResponse()
    {
        $ids = array_values(self::$pending);
        self::$pending = array();
        if (!$ids || !function_exists('fastcgi_finish_request')) {
            return;
        }
        ignore_user_abort(true);
        fastcgi_finish_request();
        $this->sendRows($this->outbox()->byIds($ids));
    }

    /**
     * The cron controller's run: up to $limit due events (new ones and retries).
     *
     * @return array{sent: int, failed: int, unsent: int}
     */
    public function sendDue($limit = self::CRON_BATCH)
    {
        $result = $this->sendRows($this->outbox()->due((int) $limit, time()));
        $result['unsent'] = $this->outbox()->countUnsent();
        return $result;
    }

    /**
     * Send stored rows with their stored webhook-id; never throws.
     *
     * @return array{sent: int, failed: int}
     */
    public function sendRows(array $rows)
    {
        $sent = $failed = 0;
        try {
            $client = $this->client();
            $outbox = $this->outbox();
            foreach ($rows as $row) {
                $status = $client->post($row['message_id'], $row['body']);
                if (JobgateClient::delivered($status)) {
                    $outbox->delivered($row);
                    ++$sent;
                    continue;
                }
                ++$failed;
                if ($outbox->attemptFailed($row, $status, time())) {
                    PrestaShopLogger::addLog('jobgate: gave up on event ' . $row['message_id'] . ' (HTTP ' . (int) $status . ')', 3, null, 'Module', (int) $this->id);
                }
            }
        } catch (Exception $e) {
            PrestaShopLogger::addLog('jobgate: ' . get_class($e), 2, null, 'Module', (int) $this->id);
        }
        return array('sent' => $sent, 'failed' => $failed);
    }

    /**
     * The cron controller's token: derived from the secret, so rotating the secret rotates it.
     */
    public function cronToken()
    {
        $secret = (string) Configuration::get(self::CONFIG_SECRET);
        return $secret === '' ? '' : substr(hash('sha256', 'jobgate-cron:' . $secret), 0, 32);
    }

    public function cronUrl()
    {
        return $this->context->link->getModuleLink($this->name, 'cron', array('token' => $this->cronToken()), true);
    }

    /**
     * Ask the gateway to check this shop's signature (no job is created).
     *
     * @return array{ok: bool, message: string}
     */
    public function testConnection()
    {
        if (!$this->isConfigured()) {
            return array('ok' => false, 'message' => $this->l('Fill in the gateway URL, tenant id and secret first.'));
        }
        $body = json_encode(array('shop' => $this->shopRef()), JSON_UNESCAPED_SLASHES);
        $status = $this->client()->request($this->endpoint() . '/ping', JobgateSigner::newMessageId(), $body, $answer);
        $data = is_string($answer) ? json_decode($answer, true) : null;
        if ($status === 200 && is_array($data)) {
            if (empty($data['site_id'])) {
                return array('ok' => false, 'message' => $this->l('Signature accepted, but the tenant has no shop registered on the gateway: run `jobgate shops set`.'));
            }
            // The gateway's answer is shown in the back office: escape it.
            $site = htmlspecialchars((string) $data['site_id'], ENT_QUOTES, 'UTF-8');
            return array('ok' => true, 'message' => sprintf($this->l('Connected: events will sync shop "%s".'), $site));
        }
        if ($status === 401) {
            return array('ok' => false, 'message' => $this->l('The gateway refused the signature: check the tenant id and the secret (and the server clock).'));
        }
        if ($status === 0) {
            return array('ok' => false, 'message' => $this->l('The gateway could not be reached: check the URL.'));
        }
        return array('ok' => false, 'message' => sprintf($this->l('The gateway answered HTTP %d.'), $status));
    }

    public function outbox()
    {
        return new JobgateOutbox();
    }

    private function endpoint()
    {
        return rtrim((string) Configuration::get(self::CONFIG_URL), '/')
            . '/v1/webhooks/prestashop/' . rawurlencode((string) Configuration::get(self::CONFIG_TENANT));
    }

    private function client()
    {
        $secrets = array_values(array_filter(array(
            (string) Configuration::get(self::CONFIG_SECRET),
            (string) Configuration::get(self::CONFIG_SECRET_NEXT),
        )));
        // JOBGATE_TIMEOUT_MS (no form field): for slow links; sending never runs in the
        // customer's request, so a longer wait costs only a PHP worker.
        $timeout = (int) Configuration::get('JOBGATE_TIMEOUT_MS');
        return new JobgateClient($this->endpoint(), $secrets, $timeout > 0 ? $timeout : JobgateClient::TIMEOUT_MS);
    }

    private function isConfigured()
    {
        return Configuration::get(self::CONFIG_URL) && Configuration::get(self::CONFIG_TENANT)
            && Configuration::get(self::CONFIG_SECRET);
    }

    private function shopRef()
    {
        $site = trim((string) Configuration::get(self::CONFIG_SITE));
        $shop = $this->context->shop;
        return array(
            'id' => $site !== '' ? $site : self::DEFAULT_SITE_ID,
            'url' => method_exists($shop, 'getBaseURL') ? rtrim((string) $shop->getBaseURL(true), '/') : null,
        );
    }

    /* ------------------------------------------------------- configuration */

    public function getContent()
    {
        $output = '';
        if (Tools::isSubmit('submitJobgate')) {
            $output .= $this->saveSettings();
        } elseif (Tools::isSubmit('submitJobgateTest')) {
            $test = $this->testConnection();
            $output .= $test['ok'] ? $this->displayConfirmation($test['message']) : $this->displayError($test['message']);
        }
        return $output . $this->renderStatus() . $this->renderForm();
    }

    private function saveSettings()
    {
        // An empty secret field keeps the stored secret: it is never sent back to the page.
        $secret = trim((string) Tools::getValue(self::CONFIG_SECRET));
        $next = trim((string) Tools::getValue(self::CONFIG_SECRET_NEXT));
        $url = trim((string) Tools::getValue(self::CONFIG_URL));
        if (!preg_match('#^https?://#i', $url)) {
            return $this->displayError($this->l('The gateway URL must start with http:// or https://'));
        }
        if ($secret === '' && (string) Configuration::get(self::CONFIG_SECRET) === '') {
            return $this->displayError($this->l('The webhook secret is required (jobgate tenants create prints it).'));
        }
        try {
            foreach (array($secret, $next) as $value) {
                if ($value !== '') {
                    JobgateSigner::decodeSecret($value);
                }
            }
        } catch (InvalidArgumentException $e) {
            return $this->displayError($this->l('The secret must look like whsec_...'));
        }
        $site = trim((string) Tools::getValue(self::CONFIG_SITE));
        Configuration::updateValue(self::CONFIG_URL, $url);
        Configuration::updateValue(self::CONFIG_TENANT, trim((string) Tools::getValue(self::CONFIG_TENANT)));
        Configuration::updateValue(self::CONFIG_SITE, $site !== '' ? $site : self::DEFAULT_SITE_ID);
        if ($secret !== '') {
            Configuration::updateValue(self::CONFIG_SECRET, $secret);
        }
        if ($next !== '' || Tools::getValue('JOBGATE_CLEAR_NEXT')) {
            Configuration::updateValue(self::CONFIG_SECRET_NEXT, $next);
        }
        return $this->displayConfirmation($this->l('Settings updated'));
    }

    /**
     * Cron URL (with its token), unsent and given-up event counts.
     */
    private function renderStatus()
    {
        $outbox = $this->outbox();
        $lines = array(
            sprintf($this->l('Events waiting to be sent: %d'), $outbox->countUnsent()),
            sprintf($this->l('Events given up on (see Advanced Parameters > Logs): %d'), $outbox->countFailed()),
        );
        $html = '<div class="panel"><h3>' . $this->l('Delivery') . '</h3>';
        foreach ($lines as $line) {
            $html .= '<p>' . htmlspecialchars($line, ENT_QUOTES, 'UTF-8') . '</p>';
        }
        if ($this->cronToken() !== '') {
            $html .= '<p>' . $this->l('Call this URL every minute from cron (it sends new events and retries):') . '</p>'
                . '<pre>* * * * * curl -fsS ' . htmlspecialchars(escapeshellarg($this->cronUrl()), ENT_QUOTES, 'UTF-8') . ' &gt;/dev/null</pre>';
        }
        return $html . '</div>';
    }

    private function renderForm()
    {
        $fields = array('form' => array(
            'legend' => array('title' => $this->l('Gateway')),
            'input' => array(
                array('type' => 'text', 'label' => $this->l('Gateway URL'), 'name' => self::CONFIG_URL, 'required' => true,
                    'desc' => $this->l('Where jobgate serves, e.g. https://jobs.example.com')),
                array('type' => 'text', 'label' => $this->l('Tenant id'), 'name' => self::CONFIG_TENANT, 'required' => true,
                    'desc' => $this->l('From `jobgate tenants create NAME` (or `jobgate tenants show NAME`).')),
                array('type' => 'text', 'label' => $this->l('Site id'), 'name' => self::CONFIG_SITE,
                    'desc' => $this->l('The --site-id given to `jobgate shops set` (default: default).')),
                array('type' => 'password', 'label' => $this->l('Webhook secret'), 'name' => self::CONFIG_SECRET, 'required' => true,
                    'desc' => (string) Configuration::get(self::CONFIG_SECRET) !== ''
                        ? $this->l('A secret is stored; leave empty to keep it.')
                        : $this->l('whsec_... printed by `jobgate tenants create` (or `jobgate webhooks rotate`).')),
                array('type' => 'password', 'label' => $this->l('Next secret (rotation)'), 'name' => self::CONFIG_SECRET_NEXT,
                    'desc' => $this->l('During a rotation events are signed with both secrets.')),
            ),
            'submit' => array('title' => $this->l('Save')),
            'buttons' => array(array(
                'type' => 'submit',
                'name' => 'submitJobgateTest',
                'title' => $this->l('Test connection'),
                'icon' => 'process-icon-refresh',
            )),
        ));
        $helper = new HelperForm();
        $helper->module = $this;
        $helper->name_controller = $this->name;
        $helper->token = Tools::getAdminTokenLite('AdminModules');
        $helper->currentIndex = AdminController::$currentIndex . '&configure=' . $this->name;
        $helper->submit_action = 'submitJobgate';
        foreach (array(self::CONFIG_URL, self::CONFIG_TENANT, self::CONFIG_SITE) as $key) {
            $helper->fields_value[$key] = Configuration::get($key);
        }
        // Secrets are never echoed back into the page.
        $helper->fields_value[self::CONFIG_SECRET] = '';
        $helper->fields_value[self::CONFIG_SECRET_NEXT] = '';
        return $helper->generateForm(array($fields));
    }
}
