<?php
/**
 * jobgate: sends thin, signed order and product events from PrestaShop to a jobgate gateway.
 *
 * PHP 7.2+ and PrestaShop 1.7 / 8 / 9. Events are Standard Webhooks (webhook-id,
 * webhook-timestamp, webhook-signature) signed with this shop's secret; the gateway
 * re-fetches the truth from the shop's Webservice, so payloads carry ids and state only.
 * Hook calls are coalesced per request (a product save fires many hooks) and sent once the
 * shop's work is done, with a 2 s timeout; undelivered events are kept and retried.
 */
if (!defined('_PS_VERSION_')) {
    exit;
}

require_once __DIR__ . '/classes/JobgateSigner.php';
require_once __DIR__ . '/classes/JobgateClient.php';

class Jobgate extends Module
{
    const CONFIG_URL = 'JOBGATE_GATEWAY_URL';
    const CONFIG_TENANT = 'JOBGATE_TENANT_ID';
    const CONFIG_SECRET = 'JOBGATE_SECRET';
    const CONFIG_SECRET_NEXT = 'JOBGATE_SECRET_NEXT';
    const CONFIG_SITE = 'JOBGATE_SITE_ID';
    const TABLE = 'jobgate_event';
    const RETRIES_PER_REQUEST = 5;

    /** @var array<string, array> events of this request, keyed by type and object id */
    private static $pending = array();
    /** @var bool */
    private static $flushRegistered = false;

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
        $this->version = '1.0.0';
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
        $sql = 'CREATE TABLE IF NOT EXISTS `' . _DB_PREFIX_ . self::TABLE . '` (
            `id_jobgate_event` INT UNSIGNED NOT NULL AUTO_INCREMENT,
            `message_id` VARCHAR(64) NOT NULL,
            `body` TEXT NOT NULL,
            `attempts` INT UNSIGNED NOT NULL DEFAULT 0,
            `next_attempt_at` INT UNSIGNED NOT NULL DEFAULT 0,
            `date_add` DATETIME NOT NULL,
            PRIMARY KEY (`id_jobgate_event`),
            KEY `next_attempt_at` (`next_attempt_at`)
        ) ENGINE=' . _MYSQL_ENGINE_ . ' DEFAULT CHARSET=utf8mb4;';
        return parent::install()
            && Db::getInstance()->execute($sql)
            && $this->registerHook($this->hooks);
    }

    public function uninstall()
    {
        foreach (array(self::CONFIG_URL, self::CONFIG_TENANT, self::CONFIG_SECRET, self::CONFIG_SECRET_NEXT, self::CONFIG_SITE) as $key) {
            Configuration::deleteByName($key);
        }
        Db::getInstance()->execute('DROP TABLE IF EXISTS `' . _DB_PREFIX_ . self::TABLE . '`');
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
     * Remember an event; one request sends each (type, object) once, at shutdown.
     */
    public function queueEvent($type, $idField, $objectId, array $extra = array())
    {
        if ($objectId < 1 || !$this->isConfigured()) {
            return;
        }
        $data = array_merge(array($idField => $objectId), $extra);
        self::$pending[$type . ':' . $objectId] = array(
            'type' => $type,
            'shop' => $this->shopRef(),
            'data' => $data,
            'occurred_at' => gmdate('Y-m-d\TH:i:s\Z'),
        );
        if (!self::$flushRegistered) {
            self::$flushRegistered = true;
            register_shutdown_function(array($this, 'flush'));
        }
    }

    /**
     * Send this request's events, then retry a few stored ones. Never throws.
     */
    public function flush()
    {
        try {
            $client = $this->client();
            $events = self::$pending;
            self::$pending = array();
            foreach ($events as $event) {
                $client->send($event);
            }
            $this->retryPending(self::RETRIES_PER_REQUEST);
        } catch (Exception $e) {
            PrestaShopLogger::addLog('jobgate: ' . get_class($e), 2, null, 'Module', (int) $this->id);
        }
    }

    /**
     * Retry up to $limit stored events whose time has come; returns how many were delivered.
     */
    public function retryPending($limit)
    {
        $db = Db::getInstance();
        $rows = $db->executeS('SELECT * FROM `' . _DB_PREFIX_ . self::TABLE . '`'
            . ' WHERE `next_attempt_at` <= ' . (int) time()
            . ' ORDER BY `id_jobgate_event` LIMIT ' . (int) $limit);
        $client = $this->client(false);
        $delivered = 0;
        foreach ((array) $rows as $row) {
            $id = (int) $row['id_jobgate_event'];
            if ($client->post($row['message_id'], $row['body'])) {
                $db->delete(self::TABLE, '`id_jobgate_event` = ' . $id);
                ++$delivered;
                continue;
            }
            $attempts = (int) $row['attempts'] + 1;
            if ($attempts >= JobgateClient::MAX_ATTEMPTS) {
                $db->delete(self::TABLE, '`id_jobgate_event` = ' . $id);
                PrestaShopLogger::addLog('jobgate: dropped event ' . pSQL($row['message_id']), 3);
                continue;
            }
            // Exponential backoff: 1 min, 2 min, 4 min, ... capped at 6 h.
            $delay = min(21600, 60 * (1 << min($attempts, 9)));
            $db->update(self::TABLE, array(
                'attempts' => $attempts,
                'next_attempt_at' => time() + $delay,
            ), '`id_jobgate_event` = ' . $id);
        }
        return $delivered;
    }

    public function storeUnsent(array $row)
    {
        Db::getInstance()->insert(self::TABLE, array(
            'message_id' => pSQL($row['message_id']),
            'body' => pSQL($row['body'], true),
            'attempts' => 1,
            'next_attempt_at' => time() + 60,
            'date_add' => date('Y-m-d H:i:s'),
        ));
    }

    private function client($storeFailures = true)
    {
        $url = rtrim((string) Configuration::get(self::CONFIG_URL), '/')
            . '/v1/webhooks/prestashop/' . rawurlencode((string) Configuration::get(self::CONFIG_TENANT));
        $secrets = array_filter(array(
            (string) Configuration::get(self::CONFIG_SECRET),
            (string) Configuration::get(self::CONFIG_SECRET_NEXT),
        ));
        return new JobgateClient($url, $secrets, $storeFailures ? array($this, 'storeUnsent') : null);
    }

    private function isConfigured()
    {
        return Configuration::get(self::CONFIG_URL) && Configuration::get(self::CONFIG_TENANT)
            && Configuration::get(self::CONFIG_SECRET);
    }

    private function shopRef()
    {
        $site = (string) Configuration::get(self::CONFIG_SITE);
        $shop = $this->context->shop;
        return array(
            'id' => $site !== '' ? $site : (string) (int) $shop->id,
            'url' => method_exists($shop, 'getBaseURL') ? rtrim((string) $shop->getBaseURL(true), '/') : null,
        );
    }

    /* ------------------------------------------------------- configuration */

    public function getContent()
    {
        $output = '';
        if (Tools::isSubmit('submitJobgate')) {
            $secret = trim((string) Tools::getValue(self::CONFIG_SECRET));
            $next = trim((string) Tools::getValue(self::CONFIG_SECRET_NEXT));
            try {
                JobgateSigner::decodeSecret($secret);
                if ($next !== '') {
                    JobgateSigner::decodeSecret($next);
                }
                Configuration::updateValue(self::CONFIG_URL, trim((string) Tools::getValue(self::CONFIG_URL)));
                Configuration::updateValue(self::CONFIG_TENANT, trim((string) Tools::getValue(self::CONFIG_TENANT)));
                Configuration::updateValue(self::CONFIG_SITE, trim((string) Tools::getValue(self::CONFIG_SITE)));
                Configuration::updateValue(self::CONFIG_SECRET, $secret);
                Configuration::updateValue(self::CONFIG_SECRET_NEXT, $next);
                $output .= $this->displayConfirmation($this->l('Settings updated'));
            } catch (InvalidArgumentException $e) {
                $output .= $this->displayError($this->l('The secret must look like whsec_...'));
            }
        }
        return $output . $this->renderForm();
    }

    private function renderForm()
    {
        $fields = array('form' => array(
            'legend' => array('title' => $this->l('Gateway')),
            'input' => array(
                array('type' => 'text', 'label' => $this->l('Gateway URL'), 'name' => self::CONFIG_URL, 'required' => true),
                array('type' => 'text', 'label' => $this->l('Tenant id'), 'name' => self::CONFIG_TENANT, 'required' => true),
                array('type' => 'text', 'label' => $this->l('Site id'), 'name' => self::CONFIG_SITE,
                    'desc' => $this->l('The shop connection name on the gateway (default: the shop id).')),
                array('type' => 'password', 'label' => $this->l('Webhook secret'), 'name' => self::CONFIG_SECRET, 'required' => true),
                array('type' => 'password', 'label' => $this->l('Next secret (rotation)'), 'name' => self::CONFIG_SECRET_NEXT,
                    'desc' => $this->l('During a rotation events are signed with both secrets.')),
            ),
            'submit' => array('title' => $this->l('Save')),
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
